"""Humans for room tests: real LiveKit SDK participants that speak generated audio and record
what the agent sends back (audio energy per track, transcription streams, attributes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import api, rtc

from bridge.audio import audible_span
from bridge.local.livekit_server import LiveKitServer
from bridge.room.media import QUIET_LEVEL
from tests.support.livekit import human_token, room_options
from tests.support.signals import FRAME_SAMPLES, SAMPLE_RATE, dominant_frequency, rms, silence, tone
from tests.support.speaker import play

LOUD = 1000.0


@dataclass
class Transcript:
    sender: str
    attributes: dict[str, str]
    text: str
    received_at: float

    @property
    def final(self) -> bool:
        return self.attributes.get("lk.transcription_final") == "true"


@dataclass
class TrackAudio:
    name: str
    sid: str
    owner: str
    loud: list[float] = field(default_factory=list)  # arrival times of loud frames
    # Each loud frame's sound on the track's own timeline, to the sample: (its first, after its
    # last sample above QUIET_LEVEL, counted in samples received). Unlike arrival times, not
    # moved by this process being busy when frames arrive.
    loud_at: list[tuple[int, int]] = field(default_factory=list)
    received: int = 0  # samples received
    samples: list[np.ndarray] = field(default_factory=list)  # loud frames, for frequency checks

    def frequency(self) -> float:
        return dominant_frequency(np.concatenate(self.samples[-50:]))


class Human:
    def __init__(
        self,
        server: LiveKitServer,
        room: str,
        identity: str,
        kind: str = "standard",
        *,
        name: str | None = None,
        auto_subscribe: bool = True,
        listen: bool = True,
        agent_prefix: str = "room-bridge-",
    ) -> None:
        self.server = server
        self.auto_subscribe = auto_subscribe  # False: hears nothing (benchmarks' extra humans)
        # False: the agent's answer tracks are recorded when subscribed but not decoded (a
        # benchmark that only needs to know the answer track arrived spares the CPU).
        self.listen = listen
        self.kind = kind
        self.name = name or identity
        self.room_name = room
        self.identity = identity
        self.room = rtc.Room()
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=200)
        self.mic: rtc.LocalTrackPublication | None = None
        self.audio: dict[str, TrackAudio] = {}
        self.transcripts: list[Transcript] = []
        self.states: list[str] = []
        # (state, time.monotonic()) as each lk.agent.state change arrived.
        self.state_at: list[tuple[str, float]] = []
        # The agent's identity starts with this (the bridge's; the peer benchmark's agent differs).
        self.agent_prefix = agent_prefix
        self.tools: list[str] = []  # the agent's bridge.tool attribute as it changed
        self.legacy: list[tuple[str, str, bool]] = []  # (participant, text, final)
        self.chats: list[tuple[str, str]] = []  # (sender, text) on lk.chat
        self._tasks: list[asyncio.Task[Any]] = []
        self._connecting: asyncio.Task[None] | None = None
        # The SDK's disconnect, once leave() started it (it may outlive a leave() that timed out).
        self.disconnecting: asyncio.Task[None] | None = None
        # The SDK's AudioSource takes one capture at a time: the silence task and say() share it.
        self._capture_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        # Set before join() to ask for agents in the token (RoomConfiguration.agents).
        self.room_config: api.RoomConfiguration | None = None

    async def join(self, *, publish_mic: bool = True) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("transcription_received", self._on_legacy)
        self.room.register_text_stream_handler("lk.transcription", self._on_transcript)
        self.room.register_text_stream_handler("lk.chat", self._on_chat)
        token = human_token(
            self.server,
            self.room_name,
            self.identity,
            name=self.name,
            kind=self.kind,
            room_config=self.room_config,
        )
        # Never cancel the SDK's connect: a cancelled connect strands the FFI's room-event
        # handshake and the SDK SIGTERMs the whole process 15 s later. A join that times out
        # leaves the connect running; leave() waits for it before disconnecting.
        self._connecting = asyncio.ensure_future(
            self.room.connect(self.server.url, token, room_options(self.auto_subscribe))
        )
        await asyncio.wait_for(asyncio.shield(self._connecting), 15)
        if publish_mic:
            await self.publish_mic()

    async def publish_mic(self) -> None:
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        self.mic = await self.room.local_participant.publish_track(track, options)
        # Keep the microphone alive with silence, like a real one.
        self._tasks.append(asyncio.create_task(self._silence()))

    async def unpublish_mic(self) -> None:
        assert self.mic is not None
        await self.room.local_participant.unpublish_track(self.mic.sid)
        self.mic = None

    async def _silence(self) -> None:
        self._speaking = False
        quiet = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        start = time.monotonic()
        i = 0
        while True:
            if not self._speaking:
                async with self._capture_lock:
                    await self.source.capture_frame(
                        rtc.AudioFrame(quiet.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
                    )
            i += 1
            delay = start + i * 0.02 - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
            if delay < -1:
                start, i = time.monotonic(), 0

    async def _capture(self, pcm: np.ndarray) -> None:
        async with self._capture_lock:
            await self.source.capture_frame(rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, len(pcm)))

    async def say(self, seconds: float, freq: float = 440.0, pause: float = 0.0) -> float:
        """Speak a tone for ``seconds`` (then ``pause`` of silence); returns when speech began."""
        self._speaking = True
        started = time.monotonic()
        try:
            await play(self._capture, tone(freq, seconds))
            if pause:
                await play(self._capture, silence(pause))
        finally:
            self._speaking = False
        return started

    async def chat(self, text: str) -> None:
        await self.room.local_participant.send_text(text, topic="lk.chat")

    # ---- what comes back ------------------------------------------------------------------------

    def _on_track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if isinstance(track, rtc.RemoteAudioTrack):
            record = TrackAudio(
                name=publication.name, sid=publication.sid, owner=participant.identity
            )
            self.audio[publication.sid] = record
            if self.listen:
                # Created here, while the track's handle is surely alive: a task started later
                # can find the track already gone (the agent unpublished it meanwhile).
                stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
                self._tasks.append(asyncio.create_task(self._listen(stream, record)))

    async def _listen(self, stream: rtc.AudioStream, record: TrackAudio) -> None:
        try:
            async for event in stream:
                data = np.frombuffer(event.frame.data, dtype=np.int16)
                if rms(data) > LOUD:
                    record.loud.append(time.monotonic())
                    first, end = audible_span(data, QUIET_LEVEL) or (0, len(data))
                    at = record.received
                    record.loud_at.append((at + first, at + end))
                    record.samples.append(data.copy())
                    del record.samples[:-200]
                record.received += len(data)
        finally:
            await stream.aclose()

    def _on_transcript(self, reader: rtc.TextStreamReader, sender: str) -> None:
        self._tasks.append(asyncio.create_task(self._read_transcript(reader, sender)))

    async def _read_transcript(self, reader: rtc.TextStreamReader, sender: str) -> None:
        try:
            text = await reader.read_all()
        except rtc.StreamError:
            return  # cut short by a disconnect (ours or theirs): not a transcript
        async with self._changed:
            self.transcripts.append(
                Transcript(sender, dict(reader.info.attributes or {}), text, time.monotonic())
            )
            self._changed.notify_all()

    def _on_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        self._tasks.append(asyncio.create_task(self._read_chat(reader, sender)))

    async def _read_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        try:
            text = await reader.read_all()
        except rtc.StreamError:
            return
        async with self._changed:
            self.chats.append((sender, text))
            self._changed.notify_all()

    def _on_legacy(
        self,
        segments: list[rtc.TranscriptionSegment],
        participant: rtc.Participant | None,
        publication: rtc.TrackPublication | None,
    ) -> None:
        for segment in segments:
            who = participant.identity if participant is not None else ""
            self.legacy.append((who, segment.text, segment.final))

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if "lk.agent.state" in changed:
            self.states.append(changed["lk.agent.state"])
            self.state_at.append((changed["lk.agent.state"], time.monotonic()))
        if "bridge.tool" in changed:
            self.tools.append(changed["bridge.tool"])
        self._tasks.append(asyncio.create_task(self._notify()))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        poll = asyncio.create_task(self._poll())
        try:
            await asyncio.wait_for(check(), timeout)
        finally:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)

    async def _poll(self) -> None:
        # Audio arrival is not a notifying event; wake the waiter periodically.
        while True:
            await asyncio.sleep(0.05)
            await self._notify()

    def agent_attributes(self) -> dict[str, str]:
        """The attributes of the agent in the room (empty when none is there)."""
        for participant in self.room.remote_participants.values():
            if participant.identity.startswith(self.agent_prefix):
                return dict(participant.attributes)
        return {}

    def agent_tracks(self) -> list[TrackAudio]:
        return [a for a in self.audio.values() if a.owner.startswith(self.agent_prefix)]

    def answer_track(self) -> TrackAudio | None:
        """The agent track that answers this human (attribute ``bridge.track.<identity>``),
        once subscribed."""
        sid = self.agent_attributes().get(f"bridge.track.{self.identity}")
        return next((a for a in self.agent_tracks() if a.sid == sid), None)

    async def publish_camera(self, width: int, height: int, fps: float, seconds: float) -> None:
        """Publish a camera track of ``width`` x ``height`` at ``fps`` for ``seconds``."""
        source = rtc.VideoSource(width, height)
        track = rtc.LocalVideoTrack.create_video_track("camera", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
        publication = await self.room.local_participant.publish_track(track, options)
        pixels = np.zeros((height, width, 4), dtype=np.uint8)
        start = time.monotonic()
        n = 0
        try:
            while time.monotonic() - start < seconds:
                pixels[:, :, 1] = (n * 7) % 255
                frame = rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, pixels.tobytes())
                source.capture_frame(frame)
                n += 1
                await asyncio.sleep(max(0.0, start + n / fps - time.monotonic()))
        finally:
            await self.room.local_participant.unpublish_track(publication.sid)
            await source.aclose()

    def final_transcripts(self, sender: str | None = None) -> list[Transcript]:
        return [t for t in self.transcripts if t.final and (sender is None or t.sender == sender)]

    async def leave(self, timeout: float = 10.0) -> None:
        """Stop speaking and listening, then disconnect. Raises TimeoutError when the SDK's
        disconnect takes longer than ``timeout``; the disconnect then goes on in
        ``self.disconnecting`` (never cancelled: the SDK's native side finishes it anyway)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._connecting is not None and not self._connecting.done():
            await asyncio.wait({self._connecting}, timeout=timeout)
        connecting = self._connecting
        if connecting is not None and connecting.done() and not connecting.cancelled():
            connecting.exception()  # a failed join raised it already; marked as retrieved
        self.disconnecting = asyncio.ensure_future(self.room.disconnect())
        done, _ = await asyncio.wait({self.disconnecting}, timeout=timeout)
        if not done:
            raise TimeoutError(f"{self.identity}: disconnect took over {timeout:g} s")
        self.disconnecting.result()
        for topic in ("lk.transcription", "lk.chat"):
            with contextlib.suppress(Exception):
                self.room.unregister_text_stream_handler(topic)
        await self.source.aclose()


@contextlib.asynccontextmanager
async def humans(
    server: LiveKitServer,
    room: str,
    *identities: str,
    publish_mic: bool = True,
    kind: str = "standard",
) -> AsyncIterator[list[Human]]:
    people = [Human(server, room, identity, kind) for identity in identities]
    try:
        for person in people:
            await person.join(publish_mic=publish_mic)
        yield people
    finally:
        for person in people:
            await person.leave()
