"""A loop task cancelled in the same loop iteration as its awaited SDK answer arrives still ends.

Python 3.11's ``asyncio.wait_for`` returns the inner result and drops such a cancel (CPython
gh-86296, fixed in 3.12): the loop then went on to its next wait and parked there for good. That
is where `serve`'s orphaned workers waited: RoomWorker's close awaited its attribute writer, which
had swallowed the cancel and sat in ``_dirty.wait()``; the room was never left.
"""

from __future__ import annotations

import asyncio
from typing import cast

from livekit import rtc

from bridge.aio import TaskSet, wait_in_loop
from bridge.room.agent_state import AgentState, AttributeWriter
from bridge.room.transcripts import Transcripts


class _AnsweredLater:
    """A participant whose attribute update waits until the test answers it."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[None] | None = None
        self.asked = asyncio.Event()
        self.calls = 0

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.calls += 1
        self.answer = asyncio.get_running_loop().create_future()
        self.asked.set()
        await self.answer


async def test_attribute_writer_ends_when_cancelled_as_its_update_is_answered() -> None:
    participant = _AnsweredLater()
    tasks = TaskSet("test")
    writer = AttributeWriter(cast(rtc.LocalParticipant, participant), tasks)
    writer.start()
    await asyncio.wait_for(participant.asked.wait(), 2)
    assert participant.answer is not None
    # The answer and the cancel in the same iteration, as when a room closes right after its
    # last session's state was published.
    participant.answer.set_result(None)
    (task,) = tasks
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()  # one more, so the test does not leak it
    await tasks.aclose()
    assert done, "the attribute writer swallowed its cancel and kept waiting"
    assert task.cancelled()
    writer.set_state("alice", AgentState.LISTENING)  # nothing runs after close
    assert participant.calls == 1


async def test_transcript_writer_ends_when_cancelled_as_its_write_finishes() -> None:
    transcripts = Transcripts(
        cast(rtc.LocalParticipant, object()),
        agent_identity="agent",
        human_identity="alice",
        human_track_sid="TR_1",
        pump=None,
        private=False,
        extra={},
    )
    written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = asyncio.Event()

    async def write() -> None:
        started.set()
        await written

    task = asyncio.create_task(transcripts.run())
    transcripts._enqueue(write)
    await asyncio.wait_for(started.wait(), 2)
    written.set_result(None)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()  # one more, so the test does not leak it
        await asyncio.wait({task}, timeout=2)
    assert done, "the transcript writer swallowed its cancel and kept running"
    assert task.cancelled()


async def test_wait_in_loop_raises_a_cancel_that_came_with_the_result() -> None:
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[int] = []

    async def loop() -> None:
        while True:
            steps.append(await wait_in_loop(answer, 5))
            await asyncio.Event().wait()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    answer.set_result(1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=2)
    assert done and task.cancelled()
    assert steps == []
