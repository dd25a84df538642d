"""What must answer before the bridge can do anything: LiveKit's server API (reachable, taking our
key and secret) and the model service (reachable, taking our key, serving our model).

``join`` runs ``start_problems`` once and exits with its lines. ``serve`` runs ``ModelWatch``: the
model service is checked at start and, while it fails, again with a growing pause (one line per
attempt); while it refuses (key, model) the pod takes no room (an agent that cannot answer would
only mislead the humans) and /readyz fails with that line, so a rollout with a wrong key stops at
its first pod. LiveKit's side is watched by the reconcile loop and the agent worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bridge.realtime.errors import RealtimeError
from bridge.realtime.model_check import check_model
from bridge.service.livekit_api import LiveKitAPIError, LiveKitServerAPI
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

RETRY_FIRST = 5.0
RETRY_MAX = 300.0


@dataclass(frozen=True)
class Problem:
    line: str
    retryable: bool


async def livekit_problem(lkapi: LiveKitServerAPI, room: str = "") -> Problem | None:
    try:
        await lkapi.list_rooms([room] if room else None)
    except LiveKitAPIError as exc:
        return Problem(str(exc), exc.retryable)
    return None


async def model_problem(settings: Settings) -> Problem | None:
    try:
        await check_model(settings)
    except RealtimeError as exc:
        return Problem(str(exc), exc.retryable)
    return None


async def start_problems(settings: Settings, room: str = "") -> list[Problem]:
    """Both checks at once; what is wrong, one line each (empty: all good)."""
    lkapi = LiveKitServerAPI(settings, timeout=settings.connect_timeout)
    try:
        found = await asyncio.gather(livekit_problem(lkapi, room), model_problem(settings))
    finally:
        await lkapi.aclose()
    return [p for p in found if p is not None]


class ModelWatch:
    """``serve``'s check of the model service, until it passes."""

    def __init__(self, settings: Settings, on_change: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.problem: Problem | None = None
        self.checked = False
        self._on_change = on_change

    async def run(self) -> None:
        pause = RETRY_FIRST
        settings = self.settings
        while True:
            before = self.not_ready()
            try:
                asked = await check_model(settings)
                self.problem = None
            except RealtimeError as exc:
                self.problem = Problem(str(exc), exc.retryable)
            self.checked = True
            if self.not_ready() != before and self._on_change is not None:
                self._on_change()
            if self.problem is None:
                logger.info(
                    "model service at %s %s",
                    settings.openai_base_url,
                    f"serves model {settings.model!r}" if asked else "answers (it lists no models)",
                )
                return
            logger.warning("%s; checking again in %.0f s", self.problem.line, pause)
            await asyncio.sleep(pause)
            pause = min(RETRY_MAX, pause * 2)

    def not_ready(self) -> str | None:
        """A refusal no retry will cure (the key, the model): no room is taken meanwhile (a
        call could not start), and /readyz says it."""
        if self.problem is not None and not self.problem.retryable:
            return self.problem.line
        return None


__all__ = ["ModelWatch", "Problem", "livekit_problem", "model_problem", "start_problems"]
