"""Task ownership helpers: nothing outlives its owner, and a close sequence runs to the end."""

from __future__ import annotations

import asyncio

import pytest

from bridge.aio import Closer, TaskSet, cancel_and_wait


async def test_closer_finishes_even_when_its_caller_is_cancelled() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    async def sequence() -> None:
        steps.append("hang up")
        await gate.wait()  # a slow network step
        steps.append("unpublish")

    closer = Closer()
    first = asyncio.create_task(closer.close(sequence()))
    await asyncio.sleep(0)
    first.cancel()  # the owner shuts down at the same moment
    with pytest.raises(asyncio.CancelledError):
        await first
    assert steps == ["hang up"]
    second = asyncio.create_task(closer.close(sequence()))  # a later aclose() waits for the run
    await asyncio.sleep(0)
    assert not second.done()
    gate.set()
    await second
    assert steps == ["hang up", "unpublish"]  # once, to the end


async def test_task_set_cancels_and_awaits_everything() -> None:
    tasks = TaskSet("test")
    stopped = []

    async def forever(n: int) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(n)

    for n in range(3):
        tasks.create_task(forever(n), name=str(n))
    await asyncio.sleep(0)
    await tasks.aclose()
    assert sorted(stopped) == [0, 1, 2]
    assert len(tasks) == 0
    with pytest.raises(RuntimeError, match="closed"):
        tasks.create_task(forever(9), name="late")


async def test_cancel_and_wait_logs_failures_instead_of_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails_on_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError(
                "boom while stopping"
            )  # on purpose: a task that fails while it stops

    task = asyncio.create_task(fails_on_stop())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert "boom while stopping" in caplog.text
