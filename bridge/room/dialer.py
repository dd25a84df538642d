"""Dialer: connects a session's next model call.

The call's session object follows how the session answers now (``Answering``: after the room's
budget is spent, a new call neither answers nor, unless priced, transcribes), its instructions
are the session's of the moment (who is in the meeting), and it gets fresh uplink tracks from the
session's media. The call is connected but not yet fed: the supervisor takes it into use.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.realtime import RealtimeCall, build_session
from bridge.realtime.instruments import Instruments
from bridge.room.rollover import CallLeg
from bridge.room.session_media import SessionMedia
from bridge.room.turns import Answering
from bridge.settings.config import Settings
from bridge.tracing import genai
from bridge.tracing.calls import CallTrace, SessionTrace


class Dialer:
    def __init__(
        self,
        settings: Settings,
        *,
        answering: Answering,
        media: SessionMedia,
        instructions: Callable[[], str],
        instruments: Instruments,
        log_extra: dict[str, str],
        room: str,
        trace: SessionTrace,
    ) -> None:
        self._settings = settings
        self._room = room  # the traces' group id when OpenAI-side tracing is on
        self._answering = answering
        self._media = media
        self._instructions = instructions
        self._instruments = instruments
        self._extra = log_extra
        self._trace = trace

    async def __call__(self) -> CallLeg:
        answering = self._answering
        session = build_session(
            self._settings,
            create_response=answering.policy == "auto",
            interrupt_response=answering.speaks,
            transcribe=answering.transcribes,
            room=self._room,
        )
        session["instructions"] = self._instructions()
        audio, video = self._media.new_tracks()
        call = RealtimeCall(
            self._settings,
            session=session,
            audio=audio,
            video=video,
            log_extra=self._extra,
            impairment=self._instruments.impairment,
            probe=self._instruments.probe,
        )
        trace = CallTrace(
            self._trace.span,
            model=self._settings.model,
            provider=genai.provider_name(
                self._settings.openai_base_url, self._settings.auth_header
            ),
            content=self._settings.trace_content,
        )
        try:
            await call.connect()
        except BaseException as exc:
            audio.stop()
            if video is not None:
                video.stop()
            trace.end("failed to connect", error=str(exc) or type(exc).__name__)
            raise
        trace.connected(call.call_id, call.connect_seconds)
        return CallLeg(call, audio, video, trace=trace)


__all__ = ["Dialer"]
