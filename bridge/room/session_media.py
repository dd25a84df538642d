"""SessionMedia: everything one session sends and hears, across its calls.

    media = SessionMedia(settings, mic=MicrophonePump(...), instruments=..., turns=...)
    await media.publish(answer_tracks, identity, name)   # the answer track (if the agent speaks)
    tasks.create_task(media.mic.run())                   # the microphone, for the whole session
    media.attach(leg)                                    # mic and camera to this call
    speaker = media.speak(call, tasks)                   # the call's voice into the room
    media.flush() / media.reopen()                       # barge-in, next answer
    media.attach(None); await cancel_and_wait(speaker)   # the call is over
    media.release(answer_tracks)                         # the track parked for the next session

The uplink (one microphone or the room's mix, bridge/room/uplink.py), the camera sampler and the
speaker pump (bridge/room/media.py) stay while calls come and go; each call gets fresh aiortc
tracks (``new_tracks``). It also answers what the rollover asks (``last_sound_at``,
``audio_queued``, ``watch_level``) and what benchmarks measure.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable

from livekit import rtc

from bridge.aio import TaskSet
from bridge.realtime import RealtimeCall
from bridge.realtime.instruments import Instruments
from bridge.realtime.tracks import PcmAudioTrack, VideoFrameTrack
from bridge.room.answer_tracks import AnswerTrack, AnswerTracks
from bridge.room.media import SpeakerPump, VideoSampler
from bridge.room.rollover import CallLeg
from bridge.room.supervisor import SessionStats
from bridge.room.tools.runner import played_out
from bridge.room.turns import TurnTracker
from bridge.room.uplink import Uplink
from bridge.settings.config import Settings


class SessionMedia:
    def __init__(
        self,
        settings: Settings,
        *,
        mic: Uplink,
        instruments: Instruments,
        turns: TurnTracker,
        stats: SessionStats,
    ) -> None:
        self.mic = mic
        self._stats = stats  # the session's: has a call been up, or failed, yet?
        self._holds = settings.uplink_backlog_s > 0  # speech said with no call up is kept
        self._video_enabled = settings.video_enabled
        self._instruments = instruments
        self._turns = turns  # told when answer audio starts and goes quiet in the room
        self._sampler = VideoSampler(settings)
        self._video_task: asyncio.Task[None] | None = None
        self.answer: AnswerTrack | None = None
        self.pump: SpeakerPump | None = None
        self._uplink_residence: deque[float] = deque(maxlen=10_000)

    # ---- the microphone --------------------------------------------------------------------------

    def start_mic(self, tasks: TaskSet) -> None:
        """The microphone, for the whole session; its first frame may make it listening."""
        tasks.create_task(self.mic.run(), name="mic")
        tasks.create_task(self._heard(), name="listen-early")

    async def _heard(self) -> None:
        await self.mic.gate.hearing.wait()
        if self._listening_early():
            self._turns.held()  # the first call is still connecting (else: no change)

    def connecting(self) -> None:
        """A call is connecting. While it is the session's first (none up yet and nothing
        failed) and the microphone is captured, what the human says is held for it (the
        backlog, ``uplink_backlog_s``) and goes to it first: the session is listening already,
        as far as the human can tell. Later calls (after a drop, a failure or an idle spell)
        are initializing: their retries may outlast what the backlog holds."""
        self._turns.connecting()
        if self._listening_early():
            self._turns.held()

    def _listening_early(self) -> bool:
        stats = self._stats
        first = stats.calls == 0 and not stats.failures
        return first and self._holds and self.mic.gate.hearing.is_set()

    # ---- the answer track ----------------------------------------------------------------------

    async def publish(self, tracks: AnswerTracks, identity: str, name: str | None) -> None:
        self.answer = await tracks.acquire(identity, name)
        turns = self._turns
        self.pump = SpeakerPump(
            self.answer.source, self._instruments.probe, turns.answer_audio, turns.answer_quiet
        )

    def release(self, tracks: AnswerTracks) -> None:
        answer, self.answer = self.answer, None
        if answer is not None:
            tracks.release(answer)  # muted and kept for the next session

    @property
    def track_sid(self) -> str | None:
        return self.answer.sid if self.answer is not None else None

    def played_out(self) -> Callable[[], Awaitable[None]] | None:
        """Until what was handed to the room has played (for a tool's goodbye)."""
        pump, answer = self.pump, self.answer
        if pump is None or answer is None:
            return None
        return functools.partial(played_out, pump, answer.source)

    # ---- calls ---------------------------------------------------------------------------------

    def new_tracks(self) -> tuple[PcmAudioTrack, VideoFrameTrack | None]:
        """A new call's uplink tracks (audio; video when it is on)."""
        audio = PcmAudioTrack(residence=self._uplink_residence, probe=self._instruments.probe)
        return audio, VideoFrameTrack() if self._video_enabled else None

    def attach(self, leg: CallLeg | None) -> None:
        """The microphone and the camera feed ``leg`` from now on (None: no call)."""
        self.mic.gate.attach(leg.audio if leg is not None else None)
        self._sampler.attach(leg.video if leg is not None else None)

    def speak(self, call: RealtimeCall, tasks: TaskSet) -> asyncio.Task[None] | None:
        """The call's voice into the room, until the call ends (the task is the caller's)."""
        if self.pump is None:
            return None
        self.pump.reopen()
        return tasks.create_task(self.pump.run(call.audio_out), name="speaker")

    def flush(self) -> None:
        """Barge-in: drop the answer queued toward the room, and what is still in flight."""
        if self.pump is not None:
            self.pump.flush()

    def reopen(self) -> None:
        """The next answer may play."""
        if self.pump is not None:
            self.pump.reopen()

    # ---- the camera ----------------------------------------------------------------------------

    def attach_video(self, track: rtc.Track, tasks: TaskSet) -> None:
        if not self._video_enabled:
            return
        if self._video_task is not None:
            self._video_task.cancel()
        self._video_task = tasks.create_task(self._sampler.run(track), name="video")

    def detach_video(self) -> None:
        if self._video_task is not None:
            self._video_task.cancel()
            self._video_task = None

    # ---- levels (what the rollover reads) and measurements -------------------------------------

    @property
    def last_sound_at(self) -> float:
        """When the human (while ``watch_level`` is on) or the agent was last heard."""
        agent = self.pump.last_sound_at if self.pump is not None else -float("inf")
        return max(self.mic.gate.last_loud_at, agent)

    @property
    def audio_queued(self) -> float:
        """Seconds of answer audio still queued toward the room."""
        return self.answer.source.queued_duration if self.answer is not None else 0.0

    def watch_level(self, on: bool) -> None:
        self.mic.gate.watch_level = on

    def uplink_residence(self) -> list[float]:
        """Seconds each microphone frame spent in the bridge before the model's encoder."""
        return list(self._uplink_residence)

    def downlink_residence(self) -> list[float]:
        """Seconds each model frame spent in the bridge before LiveKit took it."""
        return list(self.pump.residence) if self.pump is not None else []

    def dropped_frames(self) -> int:
        return self.mic.gate.dropped + (self.pump.dropped if self.pump is not None else 0)


__all__ = ["SessionMedia"]
