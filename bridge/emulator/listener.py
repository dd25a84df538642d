"""The fake model's input side: the input audio buffer, server VAD's speech start and stop, commits
(VAD's, the client's, an idle timeout's), input transcription, and the user's barge-in.

A finished turn becomes a user item in the conversation; with ``create_response`` (the
default) the responder answers it after the model's "thinking" time.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import Any

import numpy as np

from bridge.audio import FRAME_MS, Pcm
from bridge.emulator.context import ModelContext, new_id
from bridge.emulator.idle import IdleTimeout
from bridge.emulator.responder import Responder
from bridge.vad import EnergyVad, VadConfig, VadEvent

# Keep this much input audio for echo answers and client commits.
INPUT_HISTORY_MS = 30_000


class Listener:
    def __init__(self, context: ModelContext, responder: Responder, idle: IdleTimeout) -> None:
        self._ctx = context
        self._responder = responder
        self._idle = idle
        self._vad = EnergyVad(self._vad_config())
        self._history: deque[Pcm] = deque(maxlen=INPUT_HISTORY_MS // FRAME_MS)
        self._buffer_ms = 0  # uncommitted input since the last commit/clear (no-VAD mode)
        self._turn_item: str | None = None
        self._utterances = 0

    # ---- configuration ---------------------------------------------------------------------

    @property
    def _transcription_model(self) -> str:
        transcription = self._ctx.session["audio"]["input"].get("transcription") or {}
        return str(transcription.get("model") or "")

    @property
    def transcribes(self) -> bool:
        return bool(self._ctx.session["audio"]["input"].get("transcription"))

    def _vad_config(self) -> VadConfig:
        td = self._ctx.turn_detection or {}
        return VadConfig(
            threshold=float(td.get("threshold", 0.5) if td.get("threshold") is not None else 0.5),
            prefix_padding_ms=int(td.get("prefix_padding_ms") or 300),
            silence_duration_ms=int(td.get("silence_duration_ms") or 200),
            min_speech_ms=self._ctx.options.min_speech_ms,
        )

    def session_updated(self) -> None:
        """Take the turn detection of a session update."""
        self._vad.config = self._vad_config()

    # ---- audio and turns -------------------------------------------------------------------

    async def on_audio(self, pcm: Pcm) -> None:
        self._history.append(pcm)
        self._buffer_ms += FRAME_MS
        if self._ctx.turn_detection is None:
            return
        event = self._vad.push(pcm)
        if event is VadEvent.STARTED:
            await self._speech_started()
        elif event is VadEvent.STOPPED:
            self._speech_stopped()

    async def _speech_started(self) -> None:
        self._idle.stop()
        self._turn_item = new_id("item")
        self._ctx.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self._vad.speech_start_ms,
                "item_id": self._turn_item,
            }
        )
        td = self._ctx.turn_detection or {}
        if td.get("interrupt_response", True):
            await self._responder.interrupt("turn_detected")

    def _speech_stopped(self) -> None:
        item_id = self._turn_item or new_id("item")
        self._turn_item = None
        start, end = self._vad.speech_start_ms, self._vad.last_speech_ms
        self._ctx.emit(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end, "item_id": item_id}
        )
        self._commit(item_id, self._recent_audio(self._vad.audio_ms - start), end - start)
        td = self._ctx.turn_detection or {}
        if td.get("create_response", True):
            self._ctx.tasks.create_task(self._respond_later(), name="respond")

    async def _respond_later(self) -> None:
        # Transcription (if any) runs concurrently, as with the service; the answer waits for
        # the model's "thinking" time.
        await asyncio.sleep(self._ctx.options.answer_delay_ms / 1000)
        self._responder.create_response(None, None)

    def _recent_audio(self, ms: int) -> Pcm:
        frames = list(self._history)[-max(1, ms // FRAME_MS) :]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    # ---- commits ---------------------------------------------------------------------------

    def commit(self, event_id: str | None) -> None:
        """Client ``input_audio_buffer.commit``."""
        if self._buffer_ms < 100:
            self._ctx.error(
                "invalid_request_error",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {self._buffer_ms:.2f}ms of audio.",
                None,
                event_id,
                code="input_audio_buffer_commit_empty",
            )
            return
        ms = min(self._buffer_ms, INPUT_HISTORY_MS)
        self._commit(new_id("item"), self._recent_audio(ms), ms)

    def clear_input(self) -> None:
        self._buffer_ms = 0
        self._ctx.emit({"type": "input_audio_buffer.cleared"})

    def time_out(self) -> bool:
        """``idle_timeout_ms`` passed without speech: say so and commit the silence (True), or
        nothing when the user is speaking or the timeout is no longer set (False)."""
        idle = self._ctx.idle_timeout_ms
        if idle is None or self._vad.speaking:
            return False
        end = self._vad.audio_ms
        start = max(0, end - idle)
        item_id = new_id("item")
        self._ctx.emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": start,
                "audio_end_ms": end,
                "item_id": item_id,
            }
        )
        self._commit(item_id, self._recent_audio(end - start), end - start, silence=True)
        return True

    def _commit(self, item_id: str, audio: Pcm, duration_ms: int, *, silence: bool = False) -> None:
        """Commit input audio as a user item; ``silence``: an idle timeout's (nothing was said,
        so nothing is transcribed: UNVERIFIED whether the service transcribes it)."""
        ctx = self._ctx
        self._buffer_ms = 0
        self._idle.stop()
        ctx.emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": ctx.conversation.last_id,
            }
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        ctx.add_item(item, audio_ms=duration_ms)
        ctx.turns += 1
        if silence:
            ctx.heard = ""
            return
        self._utterances += 1
        n = self._utterances
        if ctx.options.transcripts:
            transcript = ctx.options.transcripts[(n - 1) % len(ctx.options.transcripts)]
        else:
            transcript = f"utterance {n}, {duration_ms / 1000:.2f} s"
        # What the model understood, whether or not the client asked for transcripts.
        ctx.conversation.set_text(item_id, transcript)
        ctx.heard = transcript
        ctx.echo = audio
        if self.transcribes:
            ctx.tasks.create_task(
                self._transcribe(item_id, transcript, duration_ms), name="transcribe"
            )

    async def _transcribe(self, item_id: str, transcript: str, duration_ms: int) -> None:
        await asyncio.sleep(self._ctx.options.transcription_delay_ms / 1000)
        where: dict[str, Any] = {"item_id": item_id, "content_index": 0}
        for word in re.findall(r"\S+\s*", transcript):
            self._ctx.emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    **where,
                    "delta": word,
                }
            )
        usage = self._ctx.bill.transcription(self._transcription_model, transcript, duration_ms)
        self._ctx.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                **where,
                "transcript": transcript,
                "usage": usage,
            }
        )
