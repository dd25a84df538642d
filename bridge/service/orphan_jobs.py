"""Jobs LiveKit can no longer end for us: their dispatches are looked up instead.

When the agent worker's socket drops and it registers again (a network blip, not a LiveKit
restart), LiveKit forgets which worker runs the jobs of the old registration: a later
``DeleteDispatch`` finds no worker to send the termination to and leaves our agent in the room
(livekit-server 1.13: ``TerminateJob`` fails with "no worker for jobID", ``MigrateJob`` does
nothing in the open-source server). So while such orphaned jobs remain, their rooms' dispatches
are listed every ``reconcile_interval`` seconds; a job whose dispatch is gone leaves its room as
a termination would have made it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from bridge.service.livekit_api import LiveKitAPIError, LiveKitServerAPI
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)


class OrphanedJob(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def room(self) -> str: ...

    @property
    def dispatch_id(self) -> str: ...


J = TypeVar("J", bound=OrphanedJob)


async def dispatch_gone(lkapi: LiveKitServerAPI, job: OrphanedJob, timeout: float) -> bool | None:
    """Whether LiveKit no longer lists the job's dispatch for its room (None: could not tell)."""
    try:
        listed = await lkapi.list_dispatch(job.room, timeout)
    except LiveKitAPIError as exc:
        logger.info(
            "agent dispatch: could not list dispatches (%s); job %s checked again later",
            exc,
            job.id,
            extra={"room": job.room},
        )
        return None
    return not any(d.id == job.dispatch_id for d in listed)


async def watch_orphans(
    settings: Settings,
    lkapi: LiveKitServerAPI,
    orphans: Callable[[], list[J]],
    leave: Callable[[J], None],
) -> None:
    """Until no orphaned job is left: every ``reconcile_interval``, ``leave`` each one whose
    dispatch is gone. ``orphans`` is asked again each round (jobs end, registrations change)."""
    while orphans():
        await asyncio.sleep(settings.reconcile_interval)
        for job in orphans():
            if await dispatch_gone(lkapi, job, settings.agent_dispatch_timeout):
                logger.info(
                    "agent dispatch: the dispatch of job %s (from an earlier registration, which "
                    "LiveKit cannot terminate) is gone; leaving the room",
                    job.id,
                    extra={"room": job.room},
                )
                leave(job)


__all__ = ["dispatch_gone", "watch_orphans"]
