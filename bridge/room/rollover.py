"""Make-before-break at the service's session limit.

The Realtime API ends a call after 60 minutes (``session_expired``). Waiting for that cuts an
answer in flight and leaves the human waiting for a new call. Instead, once the current call is
``session_rollover_s`` old, ``Rollover`` waits for a quiet moment (nobody speaking, no response
open, no audio playing or queued toward the room, no transcript pending, no tool running),
opens the next call, and tells the session to switch to it when it is still quiet. The session
then carries the conversation over, moves the microphone and the speaker pump to the new call,
and hangs up the old one. If no quiet moment comes before the limit, the service's expiry ends
the call as before and the prepared call (if any) takes over at once.

The session owns one ``Rollover``; its preparation task is cancelled and awaited, and a prepared
call that was never used is hung up, in ``reset()``/``aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.aio import cancel_and_wait
from bridge.realtime import RealtimeCall
from bridge.realtime import events as ev
from bridge.realtime.call import CallState
from bridge.realtime.tracks import PcmAudioTrack, VideoFrameTrack

logger = logging.getLogger(__name__)

# The conversation counts as quiet once nothing has happened for this long.
QUIET_GAP_S = 1.0
# After a committed turn (auto responses), a response is expected within this long.
RESPONSE_WAIT_S = 3.0
# An input transcript not back after this long no longer holds the switch up.
TRANSCRIPT_WAIT_S = 5.0
# How often quiet is re-checked while waiting for it.
POLL_S = 0.1


@dataclass
class CallLeg:
    """One model call with the tracks that feed it."""

    call: RealtimeCall
    audio: PcmAudioTrack
    video: VideoFrameTrack | None
    connected_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.call.state is CallState.ACTIVE

    async def aclose(self) -> None:
        self.audio.stop()
        if self.video is not None:
            self.video.stop()
        await self.call.aclose()


class QuietWatch:
    """Follows one call's events: is the conversation between turns right now?"""

    def __init__(self, *, expect_responses: bool, expect_transcripts: bool) -> None:
        self._expect_responses = expect_responses
        self._expect_transcripts = expect_transcripts
        self._speaking = False
        self._responses: set[str] = set()
        self._audio_playing = False
        self._transcripts: dict[str, float] = {}  # committed item -> when
        self._response_due: float | None = None
        self.last_change = time.monotonic()

    def observe(self, event: ev.ServerEvent) -> None:
        now = time.monotonic()
        kind = event.type
        if kind == ev.SpeechStarted.TYPE:
            self._speaking = True
        elif kind == ev.SpeechStopped.TYPE:
            self._speaking = False
        elif kind == ev.InputAudioCommitted.TYPE:
            assert isinstance(event, ev.InputAudioCommitted)
            if self._expect_transcripts:
                self._transcripts[event.item_id] = now
            if self._expect_responses:
                self._response_due = now + RESPONSE_WAIT_S
        elif kind in (ev.InputTranscriptCompleted.TYPE, ev.InputTranscriptFailed.TYPE):
            assert isinstance(event, ev.InputTranscriptCompleted | ev.InputTranscriptFailed)
            self._transcripts.pop(event.item_id, None)
        elif kind == ev.ResponseCreated.TYPE:
            assert isinstance(event, ev.ResponseCreated)
            self._responses.add(event.response.id)
            self._response_due = None
        elif kind == ev.ResponseDone.TYPE:
            assert isinstance(event, ev.ResponseDone)
            self._responses.discard(event.response.id)
        elif kind == ev.OutputAudioStarted.TYPE:
            self._audio_playing = True
        elif kind in (ev.OutputAudioStopped.TYPE, ev.OutputAudioCleared.TYPE):
            self._audio_playing = False
        else:
            return
        self.last_change = now

    def quiet(self, *, since: float, audio_queued: float, now: float | None = None) -> bool:
        """Quiet now, given the session's own last activity (chat) and the audio still queued
        toward the room."""
        now = time.monotonic() if now is None else now
        for item, committed in list(self._transcripts.items()):
            if now - committed > TRANSCRIPT_WAIT_S:
                del self._transcripts[item]
        if self._response_due is not None and now > self._response_due:
            self._response_due = None
        return (
            not self._speaking
            and not self._responses
            and not self._audio_playing
            and not self._transcripts
            and self._response_due is None
            and audio_queued <= 0.0
            and now - max(self.last_change, since) >= QUIET_GAP_S
        )


class Rollover:
    """Prepares the next call for one session and says when to switch to it."""

    def __init__(
        self,
        *,
        after_s: float,
        open_call: Callable[[], Awaitable[CallLeg]],
        activity: Callable[[], float],
        audio_queued: Callable[[], float],
        busy: Callable[[], bool],
        listen: Callable[[bool], None],
        expect_responses: bool,
        expect_transcripts: bool,
        backoff_initial: float,
        backoff_max: float,
        log_extra: dict[str, str],
    ) -> None:
        self._after_s = after_s
        self._open_call = open_call
        self._activity = activity
        self._audio_queued = audio_queued
        self._busy = busy
        self._listen = listen
        self._expect = (expect_responses, expect_transcripts)
        self._backoff = (backoff_initial, backoff_max)
        self._extra = log_extra
        self._watch = self._new_watch()
        self._current: CallLeg | None = None
        self._task: asyncio.Task[None] | None = None
        self._next: CallLeg | None = None
        self.rollovers = 0
        self.failures = 0
        self.switched_at: deque[float] = deque(maxlen=100)  # monotonic, for tests and benches

    def begin(self, leg: CallLeg) -> None:
        """``leg`` is now the session's call: watch it and prepare its successor in time."""
        self._current = leg
        self._watch = self._new_watch()
        self._task = asyncio.get_running_loop().create_task(
            self._prepare(leg), name="rollover-prepare"
        )

    def _new_watch(self) -> QuietWatch:
        return QuietWatch(expect_responses=self._expect[0], expect_transcripts=self._expect[1])

    def observe(self, event: ev.ServerEvent) -> None:
        self._watch.observe(event)

    def _quiet(self) -> bool:
        if self._busy():
            return False
        return self._watch.quiet(since=self._activity(), audio_queued=self._audio_queued())

    def poll_interval(self) -> float | None:
        """How long the session may wait for an event before asking ``ready()`` again."""
        if self._current is None:
            return None
        due = self._current.connected_at + self._after_s - time.monotonic()
        return max(POLL_S, due)

    def ready(self) -> bool:
        """True when a prepared call is up and the conversation is quiet: switch now."""
        if self._next is None:
            return False
        if not self._next.alive:
            # It went away while we waited for quiet: prepare another one.
            leg, self._next = self._next, None
            self._task = asyncio.get_running_loop().create_task(
                self._replace(leg), name="rollover-prepare"
            )
            return False
        return self._quiet()

    def take(self) -> CallLeg | None:
        """The prepared call, handed over to the session (which then owns it), if it is up."""
        leg, self._next = self._next, None
        if leg is not None and leg.alive:
            self.rollovers += 1
            self.switched_at.append(time.monotonic())
            return leg
        if leg is not None:
            self._next = leg  # closed by reset()
        return None

    async def reset(self) -> None:
        """The current call is over: stop preparing and hang up a prepared call not taken."""
        self._listen(False)
        await cancel_and_wait(self._task)
        self._task = None
        self._current = None
        leg, self._next = self._next, None
        if leg is not None:
            await leg.aclose()

    async def aclose(self) -> None:
        await self.reset()

    async def _replace(self, dead: CallLeg) -> None:
        await dead.aclose()
        if self._current is not None:
            await self._prepare(self._current)

    async def _prepare(self, leg: CallLeg) -> None:
        await asyncio.sleep(max(0.0, leg.connected_at + self._after_s - time.monotonic()))
        self._listen(True)  # the microphone's own level: speech before the model reports it
        attempt = 0
        while leg.alive:
            if not self._quiet():
                await asyncio.sleep(POLL_S)
                continue
            age = time.monotonic() - leg.connected_at
            try:
                self._next = await self._open_call()
            except Exception as exc:  # the current call goes on; try again later
                attempt += 1
                self.failures += 1
                delay = min(self._backoff[1], self._backoff[0] * 2 ** (attempt - 1))
                logger.warning(
                    "could not open the next call for the rollover (%s); retry in %.1f s",
                    exc,
                    delay,
                    extra=self._extra,
                )
                await asyncio.sleep(delay)
                continue
            logger.info(
                "next call ready for the rollover (current call %.0f s old)",
                age,
                extra={**self._extra, "call_id": self._next.call.call_id or ""},
            )
            return


__all__ = ["CallLeg", "QuietWatch", "Rollover"]
