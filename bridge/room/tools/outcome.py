"""What a tool call ended with, as the model and the metrics see it."""

from __future__ import annotations

import json
from dataclasses import dataclass


class ToolFailure(Exception):
    """A call that did not give an answer. ``outcome`` is the metric label; the message is a
    short sentence the model can say something sensible about (never a secret, never a body)."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


@dataclass(frozen=True)
class Result:
    call_id: str
    tool: str
    outcome: str  # ok | invalid_arguments | unknown_tool | timeout | http_error | ...
    output: str  # the function_call_output given to the model
    seconds: float

    @classmethod
    def failed(cls, call_id: str, tool: str, failure: ToolFailure, seconds: float) -> Result:
        body = {"error": failure.outcome, "message": failure.message}
        return cls(call_id, tool, failure.outcome, json.dumps(body), seconds)
