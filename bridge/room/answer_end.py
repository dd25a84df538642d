"""When an answer has ended for the room, not only for the model.

``output_audio_buffer.stopped`` says the service finished sending an answer; its end is still
queued in the bridge (RTP playout, receive queue, LiveKit's source) for a few hundred
milliseconds. Saying ``listening`` and closing the answer's transcript at that moment shows a
person the AI listening while its voice still plays. ``AnswerEnd`` runs the end of the answer
once the pump has played it out (bounded by a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bridge.aio import TaskSet
from bridge.room.media import SpeakerPump

# At most this long after ``output_audio_buffer.stopped`` (the queues hold well under a second).
PLAYOUT_TIMEOUT = 3.0


class AnswerEnd:
    def __init__(
        self,
        pump: SpeakerPump | None,
        tasks: TaskSet,
        on_end: Callable[[], None],
        timeout: float = PLAYOUT_TIMEOUT,
    ) -> None:
        self._pump = pump
        self._tasks = tasks
        self._on_end = on_end
        self._timeout = timeout
        self._waiting: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._ended.set()

    @property
    def pending(self) -> bool:
        """An answer has stopped arriving but still plays."""
        return self._waiting is not None

    def stopped(self) -> None:
        """The service finished sending the answer: end it once it has played out."""
        self.cancel()
        if self._pump is None:
            self._on_end()
            return
        self._ended.clear()
        self._waiting = self._tasks.create_task(self._wait(), name="answer-end")

    async def ended(self) -> None:
        """Until no answer is left playing (ended, or cut)."""
        await self._ended.wait()

    def finish_now(self) -> None:
        """Another answer starts: the previous one ends now."""
        if self._waiting is not None:
            self.cancel()
            self._on_end()
            self._ended.set()

    def cancel(self) -> None:
        """The answer was cut (barge-in, cleared, a new call): nothing more to end."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        self._ended.set()

    async def _wait(self) -> None:
        assert self._pump is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pump.played_out(), self._timeout)
        self._waiting = None
        self._on_end()
        self._ended.set()
