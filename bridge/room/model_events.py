"""The model's events for one session, each to its handler (a table keyed by ``type``).

    events = ModelEvents(session)
    events.handle(event)     # every server event of the call in use
    events.call_ended()      # the call is over: per-call state forgotten

Each handler tells the session's turn tracker what happened (which decides the agent state and
whether an answer was cut), and passes on what the room sees: transcripts, the cost of each
response and transcription, the tools' turn, the conversation record. Shared mode follows turns
through the session's ``observe`` hook and attributes them with ``speaker``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.realtime import events as ev
from bridge.room.turns import ResponseOutcome

if TYPE_CHECKING:
    from bridge.room.session import ParticipantSession

logger = logging.getLogger(__name__)

Handler = Callable[["ModelEvents", ev.ServerEvent], None]


class ModelEvents:
    def __init__(self, session: ParticipantSession) -> None:
        self._session = session
        self._input_text: dict[str, str] = {}  # the human's turns' transcripts, as they grow

    def handle(self, event: ev.ServerEvent) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is None:
            return
        try:
            self._session.observe(event)
            handler(self, event)
        except Exception:  # a bug with one event must not end the conversation
            logger.exception("handling %s failed", event.type, extra=self._session.log_extra)

    def call_ended(self) -> None:
        self._input_text.clear()

    # ---- the human's turn ----------------------------------------------------------------------

    def _speech_started(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.SpeechStarted)
        s = self._session
        s.conversation.speech_started(event.item_id)
        # Where the room heard it begin (the model's start includes its prefix padding).
        onset = s.media.mic.gate.speech_onset(event.audio_start_ms)
        if s.turns.speech_started(event.item_id, heard=onset):
            s.interrupt()
        if s.tools is not None:
            s.tools.barge_in()

    def _speech_stopped(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.SpeechStopped)
        s = self._session
        s.turns.speech_stopped(heard=s.media.mic.gate.speech_end(event.audio_end_ms))

    def _committed(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.InputAudioCommitted)
        self._session.turns.committed(event.item_id)

    def _input_delta(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.InputTranscriptDelta)
        s = self._session
        text = self._input_text.get(event.item_id, "") + event.delta
        self._input_text[event.item_id] = text
        if s.transcripts is not None:
            speaker = s.speaker(event.item_id)
            s.transcripts.human(event.item_id, text, final=False, speaker=speaker)

    def _input_completed(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.InputTranscriptCompleted)
        s = self._session
        self._input_text.pop(event.item_id, None)
        transcript = event.transcript.strip()
        s.turns.transcript_done(event.item_id, transcript)
        s.cost.transcription(event.usage)
        if s.transcripts is not None:
            speaker = s.speaker(event.item_id)
            s.transcripts.human(event.item_id, transcript, final=True, speaker=speaker)
        if transcript:
            s.user_said(event.item_id, transcript)
        call = s.call
        if (
            s.answering.policy == "addressed"
            and call is not None
            and s.turns.response_id is None
            and addresses(transcript, s.settings.addressed_by)
        ):
            call.send(ev.ResponseCreate())
            s.turns.answer_requested()

    def _input_failed(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.InputTranscriptFailed)
        s = self._session
        self._input_text.pop(event.item_id, None)
        s.turns.transcript_done(event.item_id)
        logger.warning("transcription failed: %s", event.error.message, extra=s.log_extra)

    # ---- the answer ----------------------------------------------------------------------------

    def _response_created(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ResponseCreated)
        s = self._session
        s.turns.response_created(event.response.id)
        if s.tools is not None:
            s.tools.response_created(event.response.id)
        s.media.reopen()

    def _audio_started(self, event: ev.ServerEvent) -> None:
        s = self._session
        s.turns.audio_started()
        s.media.reopen()
        if s.transcripts is not None:
            s.transcripts.audio_started()

    def _audio_stopped(self, event: ev.ServerEvent) -> None:
        s = self._session
        if s.transcripts is not None:
            s.transcripts.audio_stopped()
        if s.tools is not None:
            s.tools.audio_finished(str(getattr(event, "response_id", "")))
        s.turns.audio_stopped()

    def _audio_cleared(self, event: ev.ServerEvent) -> None:
        s = self._session
        if s.tools is not None:
            s.tools.audio_finished(str(getattr(event, "response_id", "")))
        s.turns.audio_cleared()
        if s.transcripts is not None:
            s.transcripts.interrupted()

    def _transcript_delta(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.AudioTranscriptDelta)
        transcripts = self._session.transcripts
        if transcripts is not None:
            transcripts.agent_delta(event.item_id, event.delta)

    def _transcript_done(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.AudioTranscriptDone)
        transcripts = self._session.transcripts
        if transcripts is None or transcripts.agent_done(event.item_id, event.transcript):
            self._session.answered(event.transcript)

    def _text_done(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.TextDone)
        transcripts = self._session.transcripts
        if transcripts is not None:
            transcripts.agent_text_only(event.item_id, event.text)

    def _response_done(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ResponseDone)
        s = self._session
        response = event.response
        usage = response.usage.model_dump() if response.usage is not None else None
        charge = s.cost.response(usage) if usage is not None else None
        if s.tools is not None:
            s.tools.response_done(response)  # may run tools, or answer their results
        outcome = ResponseOutcome(
            status=response.status,
            usage=usage,
            cost_usd=charge.usd if charge is not None else None,
            tool_calls=len(response.function_calls()),
        )
        s.turns.response_done(response.id, outcome)

    # ---- the conversation ----------------------------------------------------------------------

    def _item_added(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ItemAdded)
        self._session.conversation.item_added(str(event.item.get("id", "")), event.previous_item_id)

    def _item_deleted(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ItemDeleted)
        self._session.conversation.item_deleted(event.item_id)

    def _error(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ErrorEvent)
        s = self._session
        if event.error.code == "session_expired":
            s.expired = True
            logger.info("model session expired; reconnecting", extra=s.log_extra)
            return
        logger.warning(
            "model error %s: %s",
            event.error.code or event.error.type,
            event.error.message,
            extra=s.log_extra,
        )


def addresses(transcript: str, names: list[str]) -> bool:
    """Whether ``transcript`` names the agent (by any of ``names``, as a word)."""
    return any(re.search(rf"\b{re.escape(name)}\b", transcript, re.IGNORECASE) for name in names)


_HANDLERS: dict[str, Handler] = {
    ev.SpeechStarted.TYPE: ModelEvents._speech_started,
    ev.SpeechStopped.TYPE: ModelEvents._speech_stopped,
    ev.InputAudioCommitted.TYPE: ModelEvents._committed,
    ev.InputTranscriptDelta.TYPE: ModelEvents._input_delta,
    ev.InputTranscriptCompleted.TYPE: ModelEvents._input_completed,
    ev.InputTranscriptFailed.TYPE: ModelEvents._input_failed,
    ev.ResponseCreated.TYPE: ModelEvents._response_created,
    ev.OutputAudioStarted.TYPE: ModelEvents._audio_started,
    ev.OutputAudioStopped.TYPE: ModelEvents._audio_stopped,
    ev.OutputAudioCleared.TYPE: ModelEvents._audio_cleared,
    ev.AudioTranscriptDelta.TYPE: ModelEvents._transcript_delta,
    ev.AudioTranscriptDone.TYPE: ModelEvents._transcript_done,
    ev.TextDone.TYPE: ModelEvents._text_done,
    ev.ResponseDone.TYPE: ModelEvents._response_done,
    ev.ItemAdded.TYPE: ModelEvents._item_added,
    ev.ItemDeleted.TYPE: ModelEvents._item_deleted,
    ev.ErrorEvent.TYPE: ModelEvents._error,
}

__all__ = ["ModelEvents", "addresses"]
