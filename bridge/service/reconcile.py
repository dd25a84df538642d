"""The reconcile loop: every ``reconcile_interval`` seconds, list LiveKit's rooms and look at the
ones that may need us, so a lost webhook or a restarted pod heals by itself.

A room is looked at (its participants listed) only when it has participants, is not ours or
being joined, and is eligible — or, with agent dispatch on, when LiveKit may list a dispatch to
us for it. Looking takes no session slot; at most ``RECONCILE_CHECKS`` rooms are looked at
once, and nothing is logged for rooms that turn out not to need us.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from bridge.aio import TaskSet
from bridge.metrics import RECONCILE_RUNS
from bridge.service.eligibility import decide
from bridge.service.livekit_api import LiveKitAPIError
from bridge.settings.config import SessionOverrides

if TYPE_CHECKING:
    from bridge.service.dispatch import Dispatcher

logger = logging.getLogger(__name__)

RECONCILE_CHECKS = 4


class Reconciler:
    def __init__(self, dispatcher: Dispatcher, tasks: TaskSet) -> None:
        self._dispatcher = dispatcher
        self._tasks = tasks
        self._checking: set[str] = set()
        self._slots = asyncio.Semaphore(RECONCILE_CHECKS)
        self.last_error: str | None = None

    async def once(self) -> int:
        """One pass; returns how many rooms it started looking at."""
        dispatcher = self._dispatcher
        settings = dispatcher.settings
        rooms = await dispatcher.lkapi.list_rooms()
        started = 0
        # Capacity may cover only some candidates per pass; a different order each pass means
        # rooms other replicas already serve cannot keep the rest from ever being looked at.
        random.shuffle(rooms)
        for room in rooms:
            if dispatcher.busy_with(room.name) or room.name in self._checking:
                continue
            if dispatcher.finished(room.sid) or not room.num_participants:
                continue  # an empty room needs no look: nobody to bridge
            decision = decide(settings, room.name, room.metadata)
            # Rooms the policy leaves out are still joined when LiveKit lists a dispatch to us.
            need_dispatch = not decision.eligible
            if need_dispatch and not settings.agent_dispatch:
                continue
            if not dispatcher.takes_rooms()[0]:
                break
            self._checking.add(room.name)
            self._tasks.create_task(
                self._look(room.name, decision.overrides, room.sid, need_dispatch),
                name=f"check-{room.name}",
            )
            started += 1
        return started

    async def _look(
        self, room: str, overrides: SessionOverrides | None, sid: str, need_dispatch: bool
    ) -> None:
        try:
            async with self._slots:
                outcome = await self._dispatcher.check_then_join(
                    room, overrides, sid, need_dispatch=need_dispatch
                )
        finally:
            self._checking.discard(room)
        if outcome.outcome == "accepted":
            logger.info("reconcile: joining (%s)", outcome.detail, extra={"room": room})
        elif outcome.outcome in ("unchecked", "unavailable"):
            logger.info("reconcile: not joining: %s", outcome.detail, extra={"room": room})
        else:
            logger.debug("reconcile: %s: %s", outcome.outcome, outcome.detail, extra={"room": room})

    async def run(self) -> None:
        interval = self._dispatcher.settings.reconcile_interval
        # Replicas start at the same time after a rollout; spread their passes.
        await asyncio.sleep(random.uniform(0, min(2.0, interval)))  # jitter
        while True:
            try:
                started = await self.once()
                RECONCILE_RUNS.labels("ok").inc()
                self.last_error = None
                if started:
                    logger.debug("reconcile: looking at %d rooms", started)
            except LiveKitAPIError as exc:
                RECONCILE_RUNS.labels("error").inc()
                self.last_error = str(exc)
                logger.warning("reconcile failed: %s", exc)
            except Exception as exc:  # a bug must not stop reconciling for good
                RECONCILE_RUNS.labels("error").inc()
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("reconcile pass failed")
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))  # jitter


__all__ = ["RECONCILE_CHECKS", "Reconciler"]
