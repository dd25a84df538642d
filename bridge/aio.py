"""Task ownership helpers.

Every task in the bridge has one owner that cancels and awaits it. ``TaskSet`` is that owner for
a group of tasks; ``cancel_and_wait`` is the one way to stop them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` and wait until every one has finished.

    Exceptions other than cancellation that the tasks raised while stopping are logged, not
    re-raised: the caller is shutting down and has nobody to hand them to. If the caller itself
    is cancelled while waiting, the tasks are still awaited before the cancellation propagates,
    so nothing outlives its owner.
    """
    pending = [t for t in tasks if t is not None and not t.done()]
    for task in pending:
        task.cancel()
    done = [t for t in tasks if t is not None]
    if not done:
        return
    cancelled_while_waiting = False
    while True:
        try:
            await asyncio.gather(*done, return_exceptions=True)
            break
        except asyncio.CancelledError:
            cancelled_while_waiting = True
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            logger.error("task %s failed while stopping: %r", task.get_name(), exc)
    if cancelled_while_waiting:
        raise asyncio.CancelledError


class TaskSet:
    """Owns a changing group of tasks; ``aclose()`` cancels and awaits all of them.

    A task that fails is logged once (with its name) when it finishes, so no error is lost even
    though nobody awaits it directly. Closed sets refuse new tasks.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(set(self._tasks))

    @property
    def closed(self) -> bool:
        return self._closed

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"task set {self._name} is closed")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("task %s failed: %s", task.get_name(), exc, exc_info=exc)

    async def aclose(self) -> None:
        """Cancel and await every task. Idempotent."""
        self._closed = True
        while self._tasks:
            await cancel_and_wait(*self._tasks)


async def wait_in_loop(awaitable: Awaitable[T], timeout: float) -> T:
    """``asyncio.wait_for`` for one step of a loop that runs until cancelled.

    On Python 3.11, ``wait_for`` returns the result and drops a cancel that arrives in the loop
    iteration where its awaitable finishes (CPython gh-86296, fixed in 3.12); the loop would
    then go on to its next wait and park there for good, and its owner's ``cancel_and_wait``
    with it. Here that cancel is raised after all.
    """
    result = await asyncio.wait_for(awaitable, timeout)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return result


async def wait_for(awaitable: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
    """``asyncio.wait_for`` that names what timed out."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise TimeoutError(f"{what} timed out after {timeout:g} s") from None


class Closer:
    """Runs an object's close sequence exactly once, to the end.

    Every ``aclose()`` caller awaits the same run, and a caller being cancelled (its owner
    shutting down at the same time) never interrupts the sequence half-way: a call would stay
    up, a track stay published. The run is owned by the object; a later ``aclose()`` awaits it.
    """

    def __init__(self) -> None:
        self._run: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._run is not None

    async def close(self, sequence: Coroutine[Any, Any, None]) -> None:
        if self._run is None:
            self._run = asyncio.get_running_loop().create_task(sequence, name="close")
        else:
            sequence.close()
        await asyncio.shield(self._run)
