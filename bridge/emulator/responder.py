"""The fake model's response side: ``response.create`` (what to answer: the scripted tool calls,
a tool's output, the configured answers, an echo or "I heard ..."), running one response at a
time, its end (``response.done`` with usage, the idle clock), cancelling it, and the user's
barge-in (unplayed audio dropped, the item truncated to what was heard)."""

from __future__ import annotations

import contextlib
from typing import Any

from bridge.aio import cancel_and_wait
from bridge.audio import Pcm
from bridge.emulator.billing import IMAGE_TOKENS
from bridge.emulator.context import ModelContext, new_id
from bridge.emulator.conversation import UnknownItemError
from bridge.emulator.idle import IdleTimeout
from bridge.emulator.response_events import Response, ResponseStream
from bridge.emulator.schema import check_model_options
from bridge.emulator.voice import Speaker, tone

RATE_LIMIT_REQUESTS = {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012}


class Responder:
    def __init__(self, context: ModelContext, voice: Speaker, idle: IdleTimeout) -> None:
        self._ctx = context
        self._voice = voice
        self._idle = idle
        self._stream = ResponseStream(context, voice)
        # ``parallel_tool_calls`` is a request field only: the session the service reports
        # (session.created/updated) has no such field, so it is kept apart.
        self.parallel_tool_calls: bool | None = None
        self._response: Response | None = None
        self._playing: Response | None = None
        self._answers = 0
        self._images_pending = 0
        self._called_turn = 0  # the user turn the scripted tool calls last ran for
        self._tool_outputs: list[str] = []  # function_call_output since the last response

    @property
    def active(self) -> bool:
        """A response is being generated (between response.created and response.done)."""
        return self._response is not None

    def saw_image(self) -> None:
        self._images_pending = 1  # the model takes one snapshot when it answers

    def tool_output(self, output: str) -> None:
        """A ``function_call_output`` item: the next answer tells what the tool said."""
        self._tool_outputs.append(output)

    # ---- starting ----------------------------------------------------------------------------

    def create_response(self, params: dict[str, Any] | None, event_id: str | None) -> None:
        ctx = self._ctx
        if self._response is not None:
            ctx.error(
                "invalid_request_error",
                "Conversation already has an active response in progress: "
                f"{self._response.id}. Wait until the response is finished before creating a "
                "new one.",
                None,
                event_id,
                code="conversation_already_has_active_response",
            )
            return
        params = params or {}
        problem = check_model_options(params, str(ctx.session.get("model") or ""), "response")
        if problem is not None:
            ctx.error(
                "invalid_request_error", problem.message, problem.param, event_id, code=problem.code
            )
            return
        self._idle.stop()
        modalities = list(params.get("output_modalities") or ctx.session["output_modalities"])
        self._answers += 1
        calls = self._scripted_calls(params)
        if calls:
            response = Response(
                id=new_id("resp"),
                item_id=calls[0]["id"],
                text="",
                audio=None,
                modalities=modalities,
                calls=calls,
                metadata=params.get("metadata"),
            )
            self._response = response
            response.task = ctx.tasks.create_task(self._run_calls(response), name="response")
            return
        text = self._answer_text()
        response = Response(
            id=new_id("resp"),
            item_id=new_id("item"),
            text=text,
            audio=self._answer_audio(text) if "audio" in modalities else None,
            modalities=modalities,
            metadata=params.get("metadata"),
        )
        self._response = response
        response.task = ctx.tasks.create_task(self._run_message(response), name="response")

    def _answer_text(self) -> str:
        options, n = self._ctx.options, self._answers
        heard = self._ctx.heard or "nothing yet"
        outputs, self._tool_outputs = self._tool_outputs, []
        if outputs:
            return f"Answer {n}. The tool said: {' '.join(outputs)}."
        if options.answers:
            return options.answers[(n - 1) % len(options.answers)]
        if options.voice_mode == "echo" and self._ctx.echo is not None:
            return f"Echo {n} of {heard}."
        return f"Answer {n}. I heard: {heard}."

    def _answer_audio(self, text: str) -> Pcm:
        options, echo = self._ctx.options, self._ctx.echo
        if options.voice_mode == "echo" and echo is not None and len(echo):
            return echo
        return tone(options.tone_hz, max(0.3, len(text) / options.chars_per_second))

    def _scripted_calls(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``tool_calls`` option: function calls for a user turn that contains ``when``,
        once per turn, only for functions the session (or this response) declares; only the
        first with ``parallel_tool_calls`` false."""
        ctx = self._ctx
        if self._called_turn == ctx.turns or self._tool_outputs:
            return []
        tools = params.get("tools", ctx.session.get("tools")) or []
        choice = params.get("tool_choice", ctx.session.get("tool_choice"))
        declared = {t.get("name") for t in tools if t.get("type") == "function"}
        if choice == "none":
            return []
        calls = []
        for script in ctx.options.tool_calls:
            if script.when.lower() in ctx.heard.lower() and script.name in declared:
                calls.append(
                    {
                        "id": new_id("item"),
                        "object": "realtime.item",
                        "type": "function_call",
                        "status": "in_progress",
                        "call_id": new_id("call"),
                        "name": script.name,
                        "arguments": script.arguments,
                    }
                )
        if calls:
            self._called_turn = ctx.turns
        parallel = params.get("parallel_tool_calls", self.parallel_tool_calls)
        if parallel is False:
            calls = calls[:1]  # one tool at a time
        return calls

    # ---- running -----------------------------------------------------------------------------

    async def _run_message(self, response: Response) -> None:
        where = self._stream.open_message(response)
        if response.audio is not None:
            self._playing = response
            self._voice.play(response.id, response.audio)
        await self._stream.stream_words(response, where)
        item = self._stream.close_message(response, where)
        duration = response.duration_s(self._ctx.options.chars_per_second)
        out_ms = int(duration * 1000) if response.audio is not None else 0
        self._finish(
            response,
            status="completed",
            reason=None,
            item=item,
            out_audio_ms=out_ms,
            text=response.text,
        )

    async def _run_calls(self, response: Response) -> None:
        await self._stream.calls(response)
        self._finish(
            response,
            status="completed",
            reason=None,
            item=response.calls,
            out_audio_ms=0,
            text="".join(c["arguments"] for c in response.calls),
        )

    def _finish(
        self,
        response: Response,
        *,
        status: str,
        reason: str | None,
        item: dict[str, Any] | list[dict[str, Any]],
        out_audio_ms: int,
        text: str,
    ) -> None:
        ctx = self._ctx
        entry = ctx.conversation.get(response.item_id)
        if entry is not None and not response.calls:  # the client may have deleted it already
            entry.text, entry.audio_ms = text, out_audio_ms
        entries = ctx.conversation.entries()
        own = {response.item_id, *(str(c["id"]) for c in response.calls)}
        if self._images_pending:
            # The snapshot the model looked at joins the context with the newest input item.
            seen = next((e for e in reversed(entries) if e.id not in own), None)
            if seen is not None:
                seen.image_tokens += IMAGE_TOKENS * self._images_pending
            self._images_pending = 0
        usage = ctx.bill.response(
            response_id=response.id,
            status=status,
            session=ctx.session,
            entries=entries,
            exclude=own,
            out_audio_ms=out_audio_ms,
            out_text=text,
        )
        details: dict[str, Any] = {"type": status}
        if reason:
            details["reason"] = reason
        output = item if isinstance(item, list) else [item]
        body = response.body(status, output=output, usage=usage, status_details=details)
        response.done = True
        self._response = None
        ctx.emit({"type": "response.done", "response": body})
        idle = ctx.idle_timeout_ms
        if status == "completed" and idle is not None:
            # The idle clock starts when the answer's audio has played (response.done + its
            # duration).
            self._idle.arm((out_audio_ms + idle) / 1000)
        tokens = {
            "name": "tokens",
            "limit": 400000,
            "remaining": 400000 - usage["total_tokens"],
            "reset_seconds": 0.5,
        }
        requests = dict(RATE_LIMIT_REQUESTS)
        ctx.emit({"type": "rate_limits.updated", "rate_limits": [requests, tokens]})

    # ---- cancelling, barge-in, the output buffer ---------------------------------------------

    async def cancel(self, reason: str, event_id: str | None) -> None:
        """Client ``response.cancel``."""
        if self._response is None:
            self._ctx.error(
                "invalid_request_error",
                "Cancellation failed: no active response found",
                None,
                event_id,
                code="response_cancel_not_active",
            )
            return
        playing = self._playing is self._response and self._voice.playing
        await self._cancel_response(reason, self._voice.played_ms if playing else 0)

    async def _cancel_response(self, reason: str, played_ms: int) -> None:
        response = self._response
        if response is None:
            return
        await cancel_and_wait(response.task)
        said = "".join(response.said)
        item: dict[str, Any] | list[dict[str, Any]]
        if response.calls:
            # Cancelled calls are still reported (status incomplete); clients must not run them.
            item = [
                {**c, "status": "incomplete"} if c["status"] != "completed" else c
                for c in response.calls
            ]
        else:
            item = response.item("incomplete", said)
        self._finish(
            response,
            status="cancelled",
            reason=reason,
            item=item,
            out_audio_ms=played_ms,
            text=said,
        )

    async def interrupt(self, reason: str) -> None:
        """The user barged in: cancel the answer being generated, drop its unplayed audio, and
        truncate the item to what was heard."""
        playing = self._playing if self._voice.playing else None
        played_ms = self._voice.clear() if playing is not None else 0
        if self._response is not None:
            await self._cancel_response(reason, played_ms)
        if playing is not None:
            self._playing = None
            self._ctx.emit({"type": "output_audio_buffer.cleared", "response_id": playing.id})
            with contextlib.suppress(UnknownItemError):
                self._ctx.conversation.truncate_audio(playing.item_id, played_ms)
            self._ctx.emit(
                {
                    "type": "conversation.item.truncated",
                    "item_id": playing.item_id,
                    "content_index": 0,
                    "audio_end_ms": played_ms,
                }
            )

    def clear_output(self) -> None:
        """Client ``output_audio_buffer.clear``."""
        playing = self._playing
        self._voice.clear()
        self._playing = None
        self._ctx.emit(
            {"type": "output_audio_buffer.cleared", "response_id": playing.id if playing else ""}
        )

    def audio_stopped(self, response_id: str) -> None:
        if self._playing is not None and self._playing.id == response_id:
            self._playing = None
        self._ctx.emit({"type": "output_audio_buffer.stopped", "response_id": response_id})
