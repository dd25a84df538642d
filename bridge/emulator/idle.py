"""Server VAD's ``idle_timeout_ms``: after the model's answer has played, this long without
speech makes the model take the turn (``input_audio_buffer.timeout_triggered``).

Per openai-python 3.57 (``InputAudioBufferTimeoutTriggered`` and ``ServerVad.idle_timeout_ms``):
the timeout counts from the ``response.done`` time plus the answer's audio duration; when it
passes with no speech, the service sends ``input_audio_buffer.timeout_triggered`` with
``audio_start_ms``/``audio_end_ms`` (the silent stretch of input audio, about the timeout long)
and the ``item_id`` it commits that audio as (``input_audio_buffer.committed`` follows), then
answers. Only ``server_vad`` has it. Speech, a new response or a new answer's end re-arms or
stops the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.aio import TaskSet


class IdleTimeout:
    """One pending deadline at most; ``fire`` runs when it passes. Its task belongs to the
    model's task set, which awaits it on close."""

    def __init__(self, tasks: TaskSet, fire: Callable[[], None]) -> None:
        self._tasks = tasks
        self._fire = fire
        self._task: asyncio.Task[None] | None = None

    @property
    def armed(self) -> bool:
        return self._task is not None and not self._task.done()

    def arm(self, delay_s: float) -> None:
        """Fire after ``delay_s`` unless stopped or re-armed first."""
        self._cancel()
        self._task = self._tasks.create_task(self._wait(delay_s), name="idle-timeout")

    def stop(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    async def _wait(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._task = None
        self._fire()
