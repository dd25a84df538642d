"""Jobs of an earlier registration: their rooms are left once their dispatch is gone."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from livekit import api
from pydantic import SecretStr

from bridge.service.livekit_api import LiveKitAPIError, LiveKitServerAPI
from bridge.service.orphan_jobs import watch_orphans
from bridge.settings.config import Settings


@dataclass(frozen=True)
class Job:
    id: str
    room: str
    dispatch_id: str


Answer = list[str] | Exception


class Dispatches(LiveKitServerAPI):
    """LiveKit's server API as the orphan watch uses it: per room, the dispatch ids each
    ``list_dispatch`` lists (the last answer repeats; an exception: that call fails)."""

    def __init__(self, settings: Settings, answers: dict[str, list[Answer]]) -> None:
        super().__init__(settings)
        self.answers = answers
        self.calls: list[str] = []

    async def list_dispatch(
        self, room_name: str, timeout: float | None = None
    ) -> list[api.AgentDispatch]:
        answers = self.answers[room_name]
        answer = answers[min(self.calls.count(room_name), len(answers) - 1)]
        self.calls.append(room_name)
        if isinstance(answer, Exception):
            raise answer
        return [api.AgentDispatch(id=i, room=room_name) for i in answer]


async def test_rooms_whose_dispatch_is_gone_are_left_the_rest_kept() -> None:
    settings = Settings(
        livekit_api_key="k",
        livekit_api_secret=SecretStr("s" * 32),
        reconcile_interval=0.01,
        agent_dispatch_timeout=1.0,
    )
    jobs = {
        "gone": Job("AJ_1", "gone", "AD_1"),
        "stands": Job("AJ_2", "stands", "AD_2"),
        "flaky": Job("AJ_3", "flaky", "AD_3"),
    }
    restarting = LiveKitAPIError("LiveKit is restarting", retryable=True, code="unavailable")
    dispatches = Dispatches(
        settings,
        {
            "gone": [["AD_other"]],
            "stands": [["AD_x", "AD_2"]],
            "flaky": [restarting, restarting, []],  # gone, once LiveKit answers
        },
    )
    left: list[str] = []

    def orphans() -> list[Job]:
        # Four rounds; then the jobs are no longer orphaned (the loop ends).
        return list(jobs.values()) if dispatches.calls.count("stands") < 4 else []

    def leave(job: Job) -> None:
        left.append(job.room)
        del jobs[job.room]

    await asyncio.wait_for(watch_orphans(settings, dispatches, orphans, leave), 5)
    assert left == ["gone", "flaky"]
    assert jobs == {"stands": Job("AJ_2", "stands", "AD_2")}
    assert dispatches.calls.count("flaky") == 3
