"""Transcripts into the room, the way LiveKit front ends read them (``useTranscriptions``).

Text streams on topic ``lk.transcription`` with attributes ``lk.segment_id``,
``lk.transcribed_track_id`` and ``lk.transcription_final``, plus the legacy
``publish_transcription`` for older front ends (LiveKit's own agents publish both):

* model speech: one delta stream per answer, from the agent, track id = the session's agent
  track (with a ``private`` audience, sent to that human only). Text is released as its audio
  plays (at a nominal speaking rate, all of it when playback ends), so an interrupted answer's
  segment ends with only what was said;
* human speech: interim and final transcripts published on the human's behalf
  (``sender_identity`` = the human, track id = their microphone track; ``private``: to them only).

All network writes go through one ordered, bounded queue per session, run by ``run()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from livekit import rtc

from bridge.aio import wait_in_loop
from bridge.room.media import SpeakerPump
from bridge.room.sdk import LiveKitError, sdk_call

logger = logging.getLogger(__name__)

TOPIC = "lk.transcription"
SEGMENT_ID = "lk.segment_id"
TRACK_ID = "lk.transcribed_track_id"
FINAL = "lk.transcription_final"

# Nominal speaking rate used to release model text as its audio plays (characters per second).
CHARS_PER_SECOND = 15.0
TICK_SECONDS = 0.1
QUEUE_SIZE = 256
WRITE_TIMEOUT = 10.0


def segment_id(item_id: str) -> str:
    return "SG_" + re.sub(r"[^A-Za-z0-9]", "", item_id.removeprefix("item_"))[:24]


@dataclass
class _AgentSegment:
    id: str
    text: str = ""
    text_done: bool = False
    released: int = 0
    started_at: float | None = None  # pump.played_seconds when its audio started
    audio_done: bool = False
    writer: rtc.TextStreamWriter | None = None


class Transcripts:
    def __init__(
        self,
        participant: rtc.LocalParticipant,
        *,
        agent_identity: str,
        human_identity: str,
        human_track_sid: str,
        pump: SpeakerPump | None,
        private: bool,
        extra: dict[str, str],
        on_cut: Callable[[str], None] | None = None,
    ) -> None:
        self._participant = participant
        # An answer cut before its transcript was complete (barge-in, the call dropped): told
        # what of it was heard, the only record of it the conversation gets.
        self._on_cut = on_cut
        self._agent = agent_identity
        self._human = human_identity
        self._human_track = human_track_sid
        self._pump = pump
        # Private conversations reach only their human: the answer's transcript and their own
        # words' (and not via the legacy API, which cannot address one participant).
        self._destinations = [human_identity] if private else None
        self._extra = extra
        self.agent_track_sid = ""
        self._ops: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(QUEUE_SIZE)
        self._segment: _AgentSegment | None = None
        # Audio may start before the first word of its transcript arrives.
        self._audio_start: float | None = None
        self._finished: deque[str] = deque(maxlen=16)  # words still in flight for these are late
        self.dropped = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- model speech ------------------------------------------------------------------------

    def agent_delta(self, item_id: str, delta: str) -> None:
        if segment_id(item_id) in self._finished:
            return
        segment = self._current(item_id)
        segment.text += delta

    def agent_done(self, item_id: str, transcript: str) -> bool:
        """The answer's whole transcript; False when it comes after its answer was cut."""
        if segment_id(item_id) in self._finished:
            return False
        segment = self._current(item_id)
        segment.text = transcript
        segment.text_done = True
        if segment.audio_done:
            self._finish(segment, interrupted=False)
        return True

    def agent_text_only(self, item_id: str, text: str) -> None:
        """An answer without audio (policy or modality): publish it whole."""
        segment = self._current(item_id)
        segment.text, segment.text_done, segment.audio_done = text, True, True
        self._finish(segment, interrupted=False)

    @property
    def _played(self) -> float:
        return self._pump.played_seconds if self._pump is not None else 0.0

    def audio_started(self) -> None:
        if self._segment is not None and self._segment.started_at is None:
            self._segment.started_at = self._played
        else:
            self._audio_start = self._played

    def audio_stopped(self) -> None:
        """Playback of the answer finished: everything received was said."""
        self._audio_start = None
        segment = self._segment
        if segment is None:
            return
        segment.audio_done = True
        if segment.text_done:
            self._finish(segment, interrupted=False)

    def interrupted(self) -> None:
        """The human barged in: end the segment with what was released (= what was heard)."""
        self._audio_start = None
        if self._segment is not None:
            self._finish(self._segment, interrupted=True)

    def _current(self, item_id: str) -> _AgentSegment:
        sid = segment_id(item_id)
        if self._segment is None or self._segment.id != sid:
            if self._segment is not None:
                self._finish(self._segment, interrupted=True)
            self._segment = _AgentSegment(id=sid, started_at=self._audio_start)
            self._audio_start = None
        return self._segment

    def _release(self, segment: _AgentSegment, upto: int) -> None:
        text = segment.text
        if upto < len(text):
            # Release whole words only.
            cut = text.rfind(" ", segment.released, upto + 1)
            upto = cut + 1 if cut >= segment.released else segment.released
        if upto <= segment.released:
            return
        chunk = text[segment.released : upto]
        segment.released = upto
        self._enqueue(lambda: self._write_agent(segment, chunk, final=False))

    def _finish(self, segment: _AgentSegment, *, interrupted: bool) -> None:
        if not interrupted:
            self._release(segment, len(segment.text))
        elif not segment.text_done and self._on_cut is not None:
            heard = segment.text[: segment.released].strip()
            if heard:
                self._on_cut(heard)
        self._finished.append(segment.id)
        if self._segment is segment:
            self._segment = None
        self._enqueue(lambda: self._write_agent(segment, "", final=True))

    def tick(self) -> None:
        segment = self._segment
        if segment is None or segment.started_at is None:
            return
        played = self._played - segment.started_at
        self._release(segment, min(len(segment.text), int(played * CHARS_PER_SECOND)))

    async def _write_agent(self, segment: _AgentSegment, chunk: str, *, final: bool) -> None:
        said = segment.text[: segment.released]
        if segment.writer is None:
            if final and not said:
                return  # nothing was said: no segment at all
            segment.writer = await self._participant.stream_text(
                topic=TOPIC,
                destination_identities=self._destinations,
                attributes={
                    SEGMENT_ID: segment.id,
                    TRACK_ID: self.agent_track_sid,
                    FINAL: "false",
                },
            )
        if chunk:
            await segment.writer.write(chunk)
        if self._destinations is None:
            await self._legacy(self._agent, self.agent_track_sid, segment.id, said, final)
        if final:
            await segment.writer.aclose(attributes={FINAL: "true", TRACK_ID: self.agent_track_sid})

    # ---- human speech ------------------------------------------------------------------------

    def human(
        self, item_id: str, text: str, *, final: bool, speaker: tuple[str, str] | None = None
    ) -> None:
        """``speaker``: (identity, microphone track sid) when it is not this session's human
        (shared mode publishes each turn on behalf of whoever spoke it)."""
        sid = segment_id(item_id)
        identity, track = speaker or (self._human, self._human_track)
        self._enqueue(lambda: self._write_human(sid, text, final, identity, track))

    async def _write_human(
        self, sid: str, text: str, final: bool, identity: str, track: str
    ) -> None:
        writer = await self._participant.stream_text(
            topic=TOPIC,
            sender_identity=identity,
            destination_identities=self._destinations,
            attributes={
                SEGMENT_ID: sid,
                TRACK_ID: track,
                FINAL: "true" if final else "false",
            },
        )
        await writer.write(text)
        await writer.aclose()
        if self._destinations is None:
            await self._legacy(identity, track, sid, text, final)

    # ---- plumbing ----------------------------------------------------------------------------

    async def _legacy(self, identity: str, track: str, sid: str, text: str, final: bool) -> None:
        if not track:
            return
        segment = rtc.TranscriptionSegment(
            id=sid, text=text, start_time=0, end_time=0, final=final, language=""
        )
        await self._participant.publish_transcription(
            rtc.Transcription(participant_identity=identity, track_sid=track, segments=[segment])
        )

    def _enqueue(self, op: Callable[[], Awaitable[None]]) -> None:
        if self._ops.full():
            self.dropped += 1
            logger.error(
                "transcript queue full; a transcript update was dropped", extra=self._extra
            )
            return
        self._ops.put_nowait(op)
        self._idle.clear()

    async def run(self) -> None:
        """Perform queued writes in order and pace model text by playback."""
        while True:
            try:
                op = await wait_in_loop(self._ops.get(), TICK_SECONDS)
            except TimeoutError:
                self.tick()
                continue
            try:
                await sdk_call(op(), WRITE_TIMEOUT, "transcript write")
            except LiveKitError as exc:
                logger.warning("%s", exc, extra=self._extra)
            if self._ops.empty():
                self._idle.set()
            self.tick()

    async def drain(self, timeout: float = 2.0) -> None:
        """Finish the current segment and wait (bounded) for queued writes; for a clean end."""
        if self._segment is not None:
            self._finish(self._segment, interrupted=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
