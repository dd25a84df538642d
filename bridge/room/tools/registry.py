"""The tools one session offers, and their arguments checked against each tool's JSON Schema."""

from __future__ import annotations

import json
from typing import Any

from bridge.room.tools.outcome import ToolFailure
from bridge.settings.config import Settings
from bridge.settings.tools import ToolSpec


class Toolbox:
    def __init__(self, settings: Settings) -> None:
        from jsonschema import Draft202012Validator  # only sessions with tools need it

        self._tools = {tool.name: tool for tool in settings.tools}
        self._validators = {
            tool.name: Draft202012Validator(tool.parameters) for tool in settings.tools
        }
        self.default_timeout = settings.tool_timeout

    def __bool__(self) -> bool:
        return bool(self._tools)

    def known(self, name: str) -> bool:
        return name in self._tools

    def get(self, name: str) -> ToolSpec:
        tool = self._tools.get(name)
        if tool is None:
            raise ToolFailure("unknown_tool", f"there is no tool called {name!r}")
        return tool

    def timeout(self, tool: ToolSpec) -> float:
        return tool.timeout or self.default_timeout

    def arguments(self, tool: ToolSpec, text: str) -> dict[str, Any]:
        """The model's argument text parsed and validated, or ToolFailure saying what is wrong."""
        try:
            value = json.loads(text or "{}")
        except (ValueError, RecursionError):
            raise ToolFailure("invalid_arguments", "the arguments are not valid JSON") from None
        if not isinstance(value, dict):
            raise ToolFailure("invalid_arguments", "the arguments must be a JSON object")
        error = next(iter(self._validators[tool.name].iter_errors(value)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "arguments"
            raise ToolFailure("invalid_arguments", f"invalid arguments ({where}): {error.message}")
        return value
