"""One emulated call: the answering peer connection, the ``oai-events`` channel, media loops,
fault timers and the statistics ``GET /v1/_emulator/calls`` reports."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
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

from bridge.aio import TaskSet, cancel_and_wait
from bridge.audio import FRAME_MS
from bridge.emulator.answer import shape_answer
from bridge.emulator.loopback import LoopbackTrack
from bridge.emulator.model import FakeModel, new_id
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.schema import check_client_event, check_server_event, check_session
from bridge.emulator.voice import VoiceTrack
from bridge.realtime.playout import AudioPlayout, RtpTap, TappedPacket
from bridge.realtime.tracks import AudioReceiver, to_mono

logger = logging.getLogger(__name__)


class OfferError(ValueError):
    """The offer cannot be answered; the message is the 400 body's."""


class VideoStats:
    def __init__(self) -> None:
        self.frames = 0
        self.width = 0
        self.height = 0
        self.first: float | None = None
        self.last: float | None = None

    def add(self, width: int, height: int) -> None:
        now = time.monotonic()
        self.first = self.first if self.first is not None else now
        self.last = now
        self.frames += 1
        self.width, self.height = width, height

    def as_dict(self) -> dict[str, Any]:
        span = (self.last or 0) - (self.first or 0)
        fps = (self.frames - 1) / span if self.frames > 1 and span > 0 else 0.0
        return {
            "frames": self.frames,
            "fps": round(fps, 3),
            "width": self.width,
            "height": self.height,
        }


class EmulatedCall:
    def __init__(
        self,
        call_id: str,
        session: dict[str, Any],
        options: EmulatorOptions,
        pc: RTCPeerConnection,
    ) -> None:
        self.id = call_id
        self.options = options
        self.state = "active"
        self.ended_reason: str | None = None
        self.events_in: Counter[str] = Counter()
        self.events_out: Counter[str] = Counter()
        self.errors: deque[str] = deque(maxlen=100)
        self.video = VideoStats()
        self.audio_in_frames = 0
        self.created = time.time()
        self._pc = pc
        self._channel: RTCDataChannel | None = None
        self._tasks = TaskSet(f"emulator-call-{call_id}")
        self._voice = VoiceTrack(self._audio_started, self._audio_stopped)
        # voice_mode "loopback" (fixed when the call is created): received audio goes back as is.
        self._loopback = LoopbackTrack() if options.voice_mode == "loopback" else None
        self._tap: RtpTap | None = None
        self._input = AudioReceiver(None)
        self._input_playout: AudioPlayout | None = None
        self._inbox: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self.model = FakeModel(
            options=options, session=session, emit=self.emit, error=self.error, voice=self._voice
        )
        self._ended = asyncio.Event()

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
        self._tasks.create_task(self._process_inbox(), name="events")
        self._tasks.create_task(self._expire(), name="expiry")
        if self.options.drop_after_s is not None:
            self._tasks.create_task(self._drop(self.options.drop_after_s), name="drop")
        return shape_answer(pc.localDescription.sdp, self.options.answer_shape)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "oai-events" or self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        # The channel is open when aiortc reports it; session.created is the first event.
        self.emit({"type": "session.created", "session": self.model.session})

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

    # ---- events ------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        event = {"event_id": new_id("event"), **event}
        problem = check_server_event(event)
        if problem is not None:
            self.errors.append(f"emulator sent an invalid event: {problem}")
            logger.error("emulator sent an invalid event: %s", problem)
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        self.events_out[event["type"]] += 1
        channel.send(json.dumps(event))

    def error(
        self,
        error_type: str,
        message: str,
        param: str | None,
        event_id: str | None,
        *,
        code: str | None = None,
    ) -> None:
        self.errors.append(f"{code or error_type}: {message}")
        body: dict[str, Any] = {"type": error_type, "message": message}
        if code is not None:
            body["code"] = code
        if param is not None:
            body["param"] = param
        if event_id is not None:
            body["event_id"] = event_id
        self.emit({"type": "error", "error": body})

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        if self._inbox.full():
            self.error("invalid_request_error", "Too many events in flight.", None, None)
            return
        self._inbox.put_nowait(message)

    async def _process_inbox(self) -> None:
        while True:
            message = await self._inbox.get()
            await self._handle(message)

    async def _handle(self, message: str) -> None:
        try:
            data = json.loads(message)
        except json.JSONDecodeError:
            self.events_in["<invalid>"] += 1
            self.error(
                "invalid_request_error",
                "The event is not valid JSON.",
                None,
                None,
                code="invalid_event",
            )
            return
        event_id = data.get("event_id") if isinstance(data, dict) else None
        _event, problem = check_client_event(data)
        self.events_in[
            data.get("type", "<invalid>") if isinstance(data, dict) else "<invalid>"
        ] += 1
        if problem is not None:
            self.error(
                "invalid_request_error",
                problem.message,
                problem.param,
                event_id,
                code="invalid_event",
            )
            return
        handler = _HANDLERS.get(data["type"])
        if handler is not None:
            await handler(self, data, event_id)

    async def _session_update(self, data: dict[str, Any], event_id: str | None) -> None:
        session = data["session"]
        if session.get("type") == "realtime":
            problem = check_session(session)
            if problem is not None:
                self.error(
                    "invalid_request_error",
                    problem.message,
                    problem.param,
                    event_id,
                    code=problem.code,
                )
                return
        else:
            self.error(
                "invalid_request_error",
                "Only 'realtime' sessions are supported.",
                "session.type",
                event_id,
            )
            return
        self.model.update_session(session, event_id)

    async def _response_create(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.create_response(data.get("response"), event_id)

    async def _response_cancel(self, data: dict[str, Any], event_id: str | None) -> None:
        await self.model.cancel("client_cancelled", event_id)

    async def _output_clear(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.clear_output()

    async def _input_commit(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.commit(event_id)

    async def _input_clear(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.clear_input()

    async def _item_create(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.create_item(data["item"], data.get("previous_item_id"), event_id)

    async def _item_truncate(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.truncate_item(
            data["item_id"], data["content_index"], data["audio_end_ms"], event_id
        )

    async def _item_delete(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.delete_item(data["item_id"], event_id)

    async def _ignore(self, data: dict[str, Any], event_id: str | None) -> None:
        # input_audio_buffer.append is not used over WebRTC: the RTP track is the input.
        return

    # ---- faults and ending ----------------------------------------------------------------------

    async def _expire(self) -> None:
        await asyncio.sleep(self.options.max_session_s)
        await self.expire()

    async def expire(self) -> None:
        """End the session as the service does at its time limit: an ``error`` event with code
        ``session_expired``, then the connection closes."""
        minutes = self.options.max_session_s / 60
        self.error(
            "invalid_request_error",
            f"Your session hit the maximum duration of {minutes:g} minutes.",
            None,
            None,
            code="session_expired",
        )
        await asyncio.sleep(0.05)  # let the event leave before the connection goes
        await self.end("session_expired")

    async def _drop(self, after: float) -> None:
        await asyncio.sleep(after)
        self._tasks.create_task(self.end("dropped"), name="end")

    async def end(self, reason: str) -> None:
        """End the call (hangup, fault, peer gone, shutdown). Idempotent."""
        if self.state == "ended":
            return
        self.state = "ended"
        self.ended_reason = reason
        logger.info("emulated call %s ended: %s", self.id, reason)
        self._voice.stop()
        if self._tap is not None:
            self._tap.close()
        if self._input_playout is not None:
            self._input_playout.close()
        self._input.end()
        if self._loopback is not None:
            self._loopback.stop()
        await self._pc.close()
        self._ended.set()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        await cancel_and_wait(*others)
        await self.model.aclose()

    async def aclose(self) -> None:
        await self.end(self.ended_reason or "shutdown")
        await self._tasks.aclose()

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "ended_reason": self.ended_reason,
            "session": self.model.session,
            "events_in": dict(self.events_in),
            "events_out": dict(self.events_out),
            "audio_in_s": round(self.audio_in_frames * FRAME_MS / 1000, 2),
            "audio_out_s": round(self._voiced_out() * FRAME_MS / 1000, 2),
            "video": self.video.as_dict(),
            "errors": list(self.errors),
            "items": self.model.conversation.listing(),
            **({"loopback": self._loopback.stats()} if self._loopback is not None else {}),
            # The bill: each response's usage, and each input transcription's.
            "responses": list(self.model.bill.responses),
            "transcriptions": list(self.model.bill.transcriptions),
        }

    def _voiced_out(self) -> int:
        if self._loopback is not None:
            return self._loopback.packets
        return self._voice.voiced_frames_out


_HANDLERS = {
    "session.update": EmulatedCall._session_update,
    "response.create": EmulatedCall._response_create,
    "response.cancel": EmulatedCall._response_cancel,
    "output_audio_buffer.clear": EmulatedCall._output_clear,
    "input_audio_buffer.commit": EmulatedCall._input_commit,
    "input_audio_buffer.clear": EmulatedCall._input_clear,
    "input_audio_buffer.append": EmulatedCall._ignore,
    "conversation.item.create": EmulatedCall._item_create,
    "conversation.item.truncate": EmulatedCall._item_truncate,
    "conversation.item.delete": EmulatedCall._item_delete,
    "conversation.item.retrieve": EmulatedCall._ignore,
}
