"""RealtimeCall: one WebRTC call to the Realtime API.

Sequence (docs/protocol-notes.md, "Media"): data channel ``oai-events`` created
before the offer; a sendrecv audio transceiver; an optional send-only H.264 video transceiver;
ICE gathered in full (no trickle); offer POSTed to ``/realtime/calls``; the answer normalised
(see sdp.py) and applied; call id read from ``Location``; then we wait for ICE/DTLS, the data
channel and ``session.created``. Every step has its own timeout from Settings.

    async with RealtimeCall(settings, session=build_session(settings), audio=track) as call:
        async for event in call.events():
            ...

Leaving the block hangs up (best effort) and closes the peer connection; every task the call
started is cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from enum import Enum
from types import TracebackType
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from pydantic import BaseModel, SecretStr

from bridge.aio import Closer, TaskSet
from bridge.realtime import http
from bridge.realtime.errors import (
    RealtimeClosedError,
    RealtimeConnectionError,
    RealtimeError,
    RealtimeProtocolError,
    RealtimeTimeoutError,
)
from bridge.realtime.events import (
    ClientEvent,
    ErrorEvent,
    OutputAudioBufferClear,
    ResponseCancel,
    ServerEvent,
    SessionCreated,
    SessionUpdate,
    UnknownEvent,
    parse_server_event,
)
from bridge.realtime.ice import rtc_configuration
from bridge.realtime.instruments import FrameProbe
from bridge.realtime.playout import AudioPlayout, Impairment, RtpTap
from bridge.realtime.sdp import normalize_answer
from bridge.realtime.tracks import AudioReceiver
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "oai-events"
# Server events buffered for a slow consumer. Past this the call ends (see ``_push``): events
# are control, not media, and skipping one (a ``response.done``) would corrupt the consumer's
# view of the conversation.
EVENT_QUEUE_SIZE = 1000


class CallState(Enum):
    NEW = "new"
    CONNECTING = "connecting"
    ACTIVE = "active"
    CLOSED = "closed"


class RealtimeCall:
    """A WebRTC call to the Realtime API. Construct, then ``async with`` (or ``connect()`` and
    ``aclose()``). A call connects once; a closed call cannot be reused."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: dict[str, Any] | None = None,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        api_key: SecretStr | None = None,
        log_extra: dict[str, str] | None = None,
        impairment: Impairment | None = None,
        probe: FrameProbe | None = None,
        event_queue_size: int = EVENT_QUEUE_SIZE,
    ) -> None:
        self._settings = settings
        self._session = session
        self._audio = audio
        self._video = video
        self._key = http.api_key(settings, api_key)
        self._extra = dict(log_extra or {})
        self._state = CallState.NEW
        self._closer = Closer()
        self._tasks = TaskSet("realtime-call")
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._client: httpx.AsyncClient | None = None
        # Unbounded as a queue, bounded by ``_push``: the end (None) always fits behind it.
        self._events: asyncio.Queue[ServerEvent | None] = asyncio.Queue()
        self._max_events = event_queue_size
        self._channel_open = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._receiver: AudioReceiver | None = None
        self._tap: RtpTap | None = None
        self._playout: AudioPlayout | None = None
        self._impairment = impairment  # both a benchmark's (bridge/realtime/instruments.py)
        self._probe = probe
        self._remote_audio: MediaStreamTrack | None = None
        self.call_id: str | None = None
        self.session: dict[str, Any] = {}
        self.closed_reason: str | None = None
        self.dropped_events = 0  # arrived after the call ended (by an overflow or otherwise)
        self._ended_events = False
        self.connect_seconds: float | None = None

    def __repr__(self) -> str:
        return f"<RealtimeCall {self.call_id or '-'} {self._state.value}>"

    @property
    def state(self) -> CallState:
        return self._state

    @property
    def remote_audio_track(self) -> MediaStreamTrack | None:
        """The model's remote audio track. Read it through ``audio_out`` (which owns the loop
        that drains it); a second reader would split the frames."""
        return self._remote_audio

    @property
    def playout(self) -> AudioPlayout | None:
        """Our RTP playout of the model's audio (its statistics), when in use."""
        return self._playout

    @property
    def audio_out(self) -> AudioReceiver:
        """The model's voice, as mono 48 kHz PCM frames (available once connected)."""
        if self._receiver is None:
            raise RealtimeClosedError("not connected")
        return self._receiver

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> RealtimeCall:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        if self._state is not CallState.NEW:
            raise RealtimeError(f"call is {self._state.value}; a call connects once")
        self._state = CallState.CONNECTING
        started = time.perf_counter()
        try:
            await self._connect()
        except BaseException:
            await self.aclose(hangup=self.call_id is not None)
            raise
        self.connect_seconds = time.perf_counter() - started
        self._state = CallState.ACTIVE
        logger.info(
            "realtime call connected in %.0f ms",
            self.connect_seconds * 1000,
            extra={**self._extra, "call_id": self.call_id},
        )

    async def _connect(self) -> None:
        settings = self._settings
        self._client = http.make_client(settings)
        pc = self._pc = RTCPeerConnection(rtc_configuration(settings))
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("track", self._on_track)

        channel = self._channel = pc.createDataChannel(EVENTS_CHANNEL)
        channel.on("open", self._channel_open.set)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._on_closed("data channel closed"))

        audio = pc.addTransceiver(self._audio or "audio", direction="sendrecv")
        # The model's audio goes from RTP straight into our queue (see playout.py).
        self._receiver = AudioReceiver(None, probe=self._probe)
        self._playout = AudioPlayout(self._receiver.feed)
        self._tap = RtpTap(audio.receiver, self._playout.add, self._impairment)
        audio.setCodecPreferences(
            [
                c
                for c in RTCRtpSender.getCapabilities("audio").codecs
                if c.mimeType.lower() in ("audio/opus", "audio/pcmu", "audio/pcma")
            ]
        )
        if self._video is not None:
            video = pc.addTransceiver(self._video, direction="sendonly")
            # The service accepts H.264 only, without RTX.
            video.setCodecPreferences(
                [
                    c
                    for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.lower() == "video/h264"
                ]
            )

        await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
        answer = await http.post_offer(
            self._client,
            settings,
            key=self._key,
            offer_sdp=pc.localDescription.sdp,
            session=self._session,
        )
        self.call_id = answer.call_id
        self._extra["call_id"] = answer.call_id
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=normalize_answer(answer.sdp), type="answer")
            )
        except (ValueError, RealtimeProtocolError) as exc:
            raise RealtimeProtocolError(f"unusable SDP answer: {exc}") from None
        except Exception as exc:  # aiortc raises its own OperationError/InvalidStateError
            raise RealtimeProtocolError(f"unusable SDP answer: {exc}") from None

        await self._wait(self._connected(), settings.ice_timeout, "ICE/DTLS connect")
        await self._wait(self._channel_open.wait(), settings.datachannel_timeout, "data channel")
        first = await self._wait(self._events.get(), settings.first_event_timeout, "first event")
        if first is None:
            raise RealtimeConnectionError(
                f"call ended before session.created: {self.closed_reason}"
            )
        if isinstance(first, ErrorEvent):
            raise RealtimeProtocolError(f"service error instead of session.created: {first.error}")
        if not isinstance(first, SessionCreated):
            raise RealtimeProtocolError(f"first event was {first.type}, not session.created")
        self.session = first.session

    async def _wait(self, awaitable: Any, timeout: float, what: str) -> Any:
        closed = asyncio.ensure_future(self._closed.wait())
        step = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait(
                {step, closed}, timeout=timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            for fut in (step, closed):
                if not fut.done():
                    fut.cancel()
            await asyncio.gather(step, closed, return_exceptions=True)
        if step in done:
            return step.result()
        if closed in done:
            raise RealtimeConnectionError(f"{what}: call closed ({self.closed_reason})")
        raise RealtimeTimeoutError(f"{what}: no progress in {timeout:g} s")

    async def _connected(self) -> None:
        assert self._pc is not None
        # Woken by every connection state change (no polling: it cost 5 ms per call on average).
        while self._pc.connectionState != "connected":
            if self._pc.connectionState in ("failed", "closed"):
                raise RealtimeConnectionError(f"ICE/DTLS {self._pc.connectionState}")
            self._state_changed.clear()
            await self._state_changed.wait()

    async def hangup(self) -> None:
        """Tell the service to end the call, then close. Idempotent."""
        await self.aclose(hangup=True)

    async def aclose(self, *, hangup: bool = True) -> None:
        """Hang up (best effort, bounded by connect_timeout) and close everything. Idempotent,
        and runs to the end even if the caller is cancelled meanwhile."""
        if not self._closer.started:
            self._state = CallState.CLOSED
            if self.closed_reason is None:
                self.closed_reason = "hangup" if hangup else "closed"
            self._closed.set()
        await self._closer.close(self._close(hangup))

    async def _close(self, hangup: bool) -> None:
        if hangup and self.call_id and self._client is not None:
            try:
                await http.hangup(self._client, self._settings, key=self._key, call_id=self.call_id)
            except RealtimeError as exc:
                logger.info("hangup: %s", exc, extra=self._extra)
        await self._tasks.aclose()
        if self._tap is not None:
            self._tap.close()
        if self._playout is not None:
            self._playout.close()
        if self._receiver is not None:
            self._receiver.end()
        if self._pc is not None:
            await self._pc.close()
        if self._client is not None:
            await self._client.aclose()
        self._end_events()

    # ---- events ------------------------------------------------------------------------------

    def send(self, event: ClientEvent | dict[str, Any]) -> None:
        """Send one client event on ``oai-events``."""
        channel = self._channel
        if (
            self._state is not CallState.ACTIVE
            or self._closed.is_set()
            or channel is None
            or channel.readyState != "open"
        ):
            raise RealtimeClosedError(self.closed_reason or self._state.value)
        if isinstance(event, BaseModel):
            text = event.to_json() if isinstance(event, ClientEvent) else event.model_dump_json()
        else:
            text = json.dumps(event)
        channel.send(text)

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Server events in order, until the call ends."""
        while (event := await self.next_event()) is not None:
            yield event

    async def next_event(self) -> ServerEvent | None:
        """The next server event, or None once the call has ended. Safe to cancel (e.g. under
        ``asyncio.wait_for``): no event is lost."""
        event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # later readers see the end too
        return event

    def update_session(self, **session: Any) -> None:
        """Partial ``session.update``; ``type: realtime`` is added (it is required)."""
        self.send(SessionUpdate(session={"type": "realtime", **session}))

    def cancel_response(self) -> None:
        """Manual barge-in: stop the current answer and drop its queued audio."""
        self.send(ResponseCancel())
        self.send(OutputAudioBufferClear())

    # ---- aiortc callbacks ----------------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("model sent a message that is not JSON; ignored", extra=self._extra)
            return
        event = parse_server_event(data)
        if isinstance(event, UnknownEvent) and event.problem:
            logger.warning(
                "model event %s did not parse (%s); passed on untyped",
                event.type,
                event.problem,
                extra=self._extra,
            )
        self._push(event)

    def _push(self, event: ServerEvent) -> None:
        """Queue a server event for the consumer. A consumer so far behind that the queue is
        full ends the call: dropping an event would leave it with a wrong picture (a lost
        ``response.done`` is an answer that never ends), and a new call starts clean. The
        events already queued are still delivered, then the end."""
        if self._closed.is_set():
            self.dropped_events += 1  # the call is over; its end is queued already
            return
        if self._events.qsize() >= self._max_events:
            self.dropped_events += 1
            self._on_closed(f"model events overflowed: {self._max_events} unread")
            return
        self._events.put_nowait(event)

    def _end_events(self) -> None:
        """The consumer's end of events (once)."""
        if not self._ended_events:
            self._ended_events = True
            self._events.put_nowait(None)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self._remote_audio is not None:
            return
        self._remote_audio = track
        assert self._receiver is not None  # made with the transceiver, before any track
        self._receiver.track = track
        self._tasks.create_task(self._receiver.run(), name="audio-receive")

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        self._state_changed.set()
        state = self._pc.connectionState
        if state in ("failed", "closed") and self._state is not CallState.CLOSED:
            self._on_closed(f"peer connection {state}")

    def _on_closed(self, reason: str) -> None:
        if self.closed_reason is None and self._state is not CallState.CLOSED:
            self.closed_reason = reason
            logger.info("realtime call ended: %s", reason, extra=self._extra)
        self._closed.set()
        self._end_events()
