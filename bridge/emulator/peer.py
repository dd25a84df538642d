"""One emulated WebRTC call: the answering peer connection, the ``oai-events`` channel and the
media loops. Events, the fake model, faults and statistics are ``session.EmulatedSession``'s."""

from __future__ import annotations

import logging
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from bridge.emulator.answer import shape_answer
from bridge.emulator.loopback import LoopbackTrack
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.session import EmulatedSession
from bridge.emulator.voice import VoiceTrack
from bridge.realtime.playout import AudioPlayout, RtpTap, TappedPacket
from bridge.realtime.tracks import AudioReceiver, to_mono

logger = logging.getLogger(__name__)


class OfferError(ValueError):
    """The offer cannot be answered; the message is the 400 body's."""


class EmulatedCall(EmulatedSession):
    transport = "webrtc"

    def __init__(
        self,
        call_id: str,
        session: dict[str, Any],
        options: EmulatorOptions,
        pc: RTCPeerConnection,
    ) -> None:
        self._voice = VoiceTrack(self._audio_started, self._audio_stopped)
        super().__init__(call_id, session, options, self._voice)
        self._pc = pc
        self._channel: RTCDataChannel | None = None
        # voice_mode "loopback" (fixed when the call is created): received audio goes back as is.
        self._loopback = LoopbackTrack() if options.voice_mode == "loopback" else None
        self._tap: RtpTap | None = None
        self._input = AudioReceiver(None)
        self._input_playout: AudioPlayout | None = None

    # ---- setup -------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        pc = self._pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError and its own errors
            raise OfferError(f"Invalid SDP offer: {exc}") from None
        kinds = [t.kind for t in pc.getTransceivers()]
        if "audio" not in kinds:
            raise OfferError("Invalid SDP offer: no audio media section.")
        for transceiver in pc.getTransceivers():
            caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
            wanted: tuple[str, ...]
            if transceiver.kind == "audio":
                wanted = ("audio/opus", "audio/pcmu", "audio/pcma")
            else:
                wanted = ("video/h264",)
            transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in wanted])
        audio = next(t for t in pc.getTransceivers() if t.kind == "audio")
        if self._loopback is not None:
            self._tap = RtpTap(audio.receiver, self._on_loopback_packet)
            pc.addTrack(self._loopback)
        else:
            # The fake model hears the caller through the same RTP playout as the bridge (no
            # fixed 80 ms prefetch of aiortc's receiver), so its turn detection and barge-in
            # timing are not padded by a buffer of the emulator's own.
            self._input_playout = AudioPlayout(self._input.feed)
            self._tap = RtpTap(audio.receiver, self._input_playout.add)
            pc.addTrack(self._voice)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            raise OfferError(f"Invalid SDP offer: {exc}") from None
        self.start()
        return shape_answer(pc.localDescription.sdp, self.options.answer_shape)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "oai-events" or self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self.receive)
        # The channel is open when aiortc reports it; session.created is the first event.
        self.created_event()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._loopback is None and self._input.track is None:
            self._input.track = track  # only reports the end: frames come from the playout
            self._tasks.create_task(self._input.run(), name="audio-end")
            self._tasks.create_task(self._audio_loop(), name="audio-in")
        elif track.kind == "video":
            self._tasks.create_task(self._media_loop(track), name="video-in")

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed") and self.state == "active":
            self._tasks.create_task(self.end("peer_closed"), name="end")

    # ---- media -------------------------------------------------------------------------------

    async def _audio_loop(self) -> None:
        async for pcm in self._input.frames():
            self.audio_in_frames += 1
            await self.model.on_audio(pcm)

    async def _media_loop(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.AudioFrame):
                self.audio_in_frames += 1
                await self.model.on_audio(to_mono(frame))
            elif isinstance(frame, av.VideoFrame):
                self.video.add(frame.width, frame.height)
                self.model.on_video_frame()

    def _on_loopback_packet(self, packet: TappedPacket) -> None:
        assert self._loopback is not None
        self.audio_in_frames += 1
        self._loopback.on_packet(packet)

    def _audio_started(self, response_id: str) -> None:
        self.model.audio_started(response_id)

    def _audio_stopped(self, response_id: str) -> None:
        self.model.audio_stopped(response_id)

    # ---- transport ---------------------------------------------------------------------------

    def _send(self, text: str) -> bool:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return False
        channel.send(text)
        return True

    async def _append(self, data: dict[str, Any], event_id: str | None) -> None:
        # Not used over WebRTC: the RTP track is the input.
        return

    async def _clear_output(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.clear_output()

    async def _close(self) -> None:
        self._voice.stop()
        if self._tap is not None:
            self._tap.close()
        if self._input_playout is not None:
            self._input_playout.close()
        self._input.end()
        if self._loopback is not None:
            self._loopback.stop()
        await self._pc.close()

    def _snapshot_extra(self) -> dict[str, Any]:
        return {"loopback": self._loopback.stats()} if self._loopback is not None else {}

    def _voiced_out(self) -> int:
        if self._loopback is not None:
            return self._loopback.packets
        return self._voice.voiced_frames_out
