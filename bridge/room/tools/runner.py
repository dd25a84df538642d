"""ToolRunner: one session's tool calls, from the model's ``response.done`` to the answer.

Facts of the Realtime API this follows (docs/protocol-notes.md, "Function and MCP tools"):

* a cancelled or interrupted response still reports its function calls, so only calls in a
  ``completed`` response run (``Response.function_calls``);
* only one response may be active, so outputs and the one ``response.create`` go out after the
  active response is done; several calls of one response run concurrently and all their outputs
  go back before that single ``response.create``;
* a tool result always gets its answer, whatever the response policy, unless the human barged in
  meanwhile: then the result is still recorded but the interrupted turn does not resume;
* a later response may ask for tools while an earlier batch still runs (the human spoke over the
  wait and their new turn needs a tool): every batch's outputs go back, together, once the last
  one is done.

The caller (whom an RPC goes to, whom an HTTP tool is told about, whom ``end_call`` hangs up) is
resolved when a batch starts: in one-to-one mode the session's human, in shared mode whoever took
the turn the model answered (``None`` when no one can be named).

While calls run the agent state is ``thinking``. Built-ins act once the goodbye that follows them
has played in the room.

Each call is a span (``execute_tool <name>``: name, kind, outcome, duration; never argument values)
under the span ``span_parent`` gives when the batch starts: the turn whose response asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc

from bridge.aio import TaskSet, cancel_and_wait
from bridge.metrics import TOOL_CALLS, TOOL_SECONDS, observe
from bridge.realtime import RealtimeCall, RealtimeClosedError
from bridge.realtime import events as ev
from bridge.room.media import SpeakerPump
from bridge.room.tools.builtins import OUTPUTS, RoomActions
from bridge.room.tools.http import Caller, HttpTools
from bridge.room.tools.outcome import Result, ToolFailure
from bridge.room.tools.registry import Toolbox
from bridge.room.tools.rpc import call_rpc
from bridge.settings.config import Settings
from bridge.settings.tools import ToolSpec
from bridge.tracing import genai, spans

logger = logging.getLogger(__name__)

# How long a goodbye may take before a built-in acts anyway (the model may not say one).
GOODBYE_TIMEOUT = 20.0
PLAYOUT_TIMEOUT = 10.0

NOBODY = "no one in the room can be named as the person asking; ask them to say it again"


class ToolRunner:
    def __init__(
        self,
        *,
        settings: Settings,
        participant: rtc.LocalParticipant,
        room: str,
        caller: Callable[[], Caller | None],
        tasks: TaskSet,
        actions: RoomActions | None,
        on_thinking: Callable[[], None],
        on_running: Callable[[list[str]], None],
        playout: Callable[[], Awaitable[None]] | None,
        extra: dict[str, Any],
        span_parent: Callable[[], spans.Parent] = lambda: None,
    ) -> None:
        self._toolbox = Toolbox(settings)
        self._http = HttpTools(settings)
        self._participant = participant
        self._room = room
        self._caller = caller
        self._tasks = tasks
        self._actions = actions
        self._on_thinking = on_thinking
        self._on_running = on_running  # the names of the tools running now, for the room
        self._playout = playout
        self._extra = extra
        self._span_parent = span_parent
        self._call: RealtimeCall | None = None
        self._active: str | None = None  # the response in progress, if any
        self._batches: set[asyncio.Task[None]] = set()  # running; outputs go back after all
        self._ready: list[Result] = []
        self._interrupted = False
        self._builtin: str | None = None  # end_call / leave_room, once its goodbye played
        self._hang_up: str | None = None  # whom end_call removes
        self._answer_pending = False  # response.create sent for tool outputs, not yet created
        self._awaiting_goodbye = False
        self._goodbye_id: str | None = None
        self._goodbye_played = asyncio.Event()
        self._goodbye_task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Tool calls are running, their outputs wait to go back, or their answer is on its way."""
        return bool(self._batches) or bool(self._ready) or self._answer_pending

    async def aclose(self) -> None:
        await cancel_and_wait(*self._batches, self._goodbye_task)
        self._batches.clear()
        await self._http.aclose()
        self._on_running([])

    # ---- hooks from the session --------------------------------------------------------------

    def attach(self, call: RealtimeCall | None) -> None:
        """A new call (or none): anything for the previous call's conversation is dropped."""
        self._call = call
        self._active = None
        self._ready.clear()
        if self._batches:
            for batch in self._batches:
                batch.cancel()
            self._batches.clear()
            self._on_running([])

    def response_created(self, response_id: str) -> None:
        self._active = response_id
        self._answer_pending = False
        if self._awaiting_goodbye:
            self._awaiting_goodbye = False
            self._goodbye_id = response_id

    def response_done(self, response: ev.Response) -> None:
        if self._active == response.id:
            self._active = None
        self._answer_pending = False
        calls = response.function_calls()
        if calls and self._call is not None:
            # A new turn's calls: their outputs are answered (with any earlier batch's).
            self._interrupted = False
            batch = self._tasks.create_task(
                self._run_batch(calls, self._caller(), self._span_parent()), name="tools"
            )
            self._batches.add(batch)
            self._on_thinking()
        if response.id == self._goodbye_id:
            if not _has_audio(response):
                self._goodbye_played.set()
            self._goodbye_task = self._tasks.create_task(self._after_goodbye(), name="goodbye")
        self._flush()

    def audio_finished(self, response_id: str) -> None:
        """``output_audio_buffer.stopped`` or ``.cleared`` for ``response_id``."""
        if response_id and response_id == self._goodbye_id:
            self._goodbye_played.set()

    def barge_in(self) -> None:
        self._answer_pending = False
        if self.busy:
            self._interrupted = True

    # ---- running ---------------------------------------------------------------------------

    async def _run_batch(
        self, calls: list[ev.FunctionCall], caller: Caller | None, parent: spans.Parent
    ) -> None:
        self._on_running([c.name if self._toolbox.known(c.name) else "unknown" for c in calls])
        try:
            results = await asyncio.gather(*(self._run_one(c, caller, parent) for c in calls))
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._batches.discard(task)
            if not self._batches:
                self._on_running([])
        self._ready.extend(results)
        self._flush()

    async def _run_one(
        self, call: ev.FunctionCall, caller: Caller | None, parent: spans.Parent
    ) -> Result:
        started = time.monotonic()
        label = call.name
        try:
            tool = self._toolbox.get(call.name)
        except ToolFailure as failure:
            label = "unknown"  # the model's invention must not become a metric label
            span = _tool_span(parent, label, "unknown", call.call_id)
            return self._record(Result.failed(call.call_id, label, failure, 0.0), call, span)
        span = _tool_span(parent, label, _kind(tool), call.call_id)
        try:
            arguments = self._toolbox.arguments(tool, call.arguments)
            output = await self._target(tool.name, arguments, call.call_id, caller)
            result = Result(call.call_id, label, "ok", output, time.monotonic() - started)
        except ToolFailure as failure:
            result = Result.failed(call.call_id, label, failure, time.monotonic() - started)
        except Exception:  # a bug in one tool must not end the conversation
            logger.exception("tool %s failed unexpectedly", label, extra=self._extra)
            bug = ToolFailure("internal_error", "the tool failed")
            result = Result.failed(call.call_id, label, bug, time.monotonic() - started)
        return self._record(result, call, span)

    async def _target(
        self, name: str, arguments: dict[str, Any], call_id: str, caller: Caller | None
    ) -> str:
        tool = self._toolbox.get(name)
        timeout = self._toolbox.timeout(tool)
        if tool.url is not None:
            return await self._http.call(
                tool, arguments, call_id, room=self._room, caller=caller, timeout=timeout
            )
        if tool.rpc is not None:
            if caller is None:
                raise ToolFailure("not_available", NOBODY)
            try:
                return await call_rpc(
                    self._participant, caller.identity, tool.rpc, arguments, timeout
                )
            except RuntimeError:  # perform_rpc on a disconnected room
                raise ToolFailure("unreachable", "the person's app could not be reached") from None
        assert tool.builtin is not None
        if self._actions is None:
            raise ToolFailure("not_available", f"{tool.builtin} is not available here")
        if tool.builtin == "end_call":
            if caller is None:
                raise ToolFailure("not_available", NOBODY)
            self._hang_up = caller.identity
        self._builtin = tool.builtin
        return OUTPUTS[tool.builtin]

    def _record(self, result: Result, call: ev.FunctionCall, span: spans.Span) -> Result:
        TOOL_CALLS.labels(result.tool, result.outcome).inc()
        observe(TOOL_SECONDS, result.seconds, spans.exemplar(span), tool=result.tool)
        span.set_attributes(
            {"bridge.tool.outcome": result.outcome, "bridge.tool.seconds": result.seconds}
        )
        spans.end_span(span, error=None if result.outcome == "ok" else result.outcome)
        extra = {**self._extra, "call_id": call.call_id}
        logger.info(
            "tool %s: %s in %.3f s", result.tool, result.outcome, result.seconds, extra=extra
        )
        # Arguments and outputs may be personal data: never at INFO.
        logger.debug("tool %s arguments %s -> %s", call.name, call.arguments, result.output)
        return result

    # ---- answering -----------------------------------------------------------------------------

    def _flush(self) -> None:
        call = self._call
        if not self._ready or self._batches or self._active is not None or call is None:
            return
        results, self._ready = self._ready, []
        try:
            for result in results:
                call.send(ev.ConversationItemCreate.function_output(result.call_id, result.output))
            if self._interrupted and self._builtin is None:
                # The human spoke over the wait: the result is in the conversation, and their
                # new turn gets the answer, not the old one.
                self._interrupted = False
                return
            call.send(ev.ResponseCreate())
        except RealtimeClosedError:
            return  # the call ended; the next one starts without these
        self._interrupted = False
        self._answer_pending = True
        self._on_thinking()
        if self._builtin is not None:
            self._awaiting_goodbye = True

    async def _after_goodbye(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._goodbye_played.wait(), GOODBYE_TIMEOUT)
        if self._playout is not None:
            # What the service finished sending may still be queued toward the room.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._playout(), PLAYOUT_TIMEOUT)
        builtin, self._builtin = self._builtin, None
        hang_up, self._hang_up = self._hang_up, None
        self._goodbye_id = None
        self._goodbye_played.clear()
        if self._actions is None or builtin is None:
            return
        if builtin == "end_call":
            if hang_up is not None:
                self._actions.end_call(hang_up)
        else:
            self._actions.leave_room()


async def played_out(pump: SpeakerPump, source: rtc.AudioSource) -> None:
    """Until the model's audio has stopped arriving and LiveKit has played what it queued.
    ``output_audio_buffer.stopped`` only says the service finished sending; our receive queue
    may still hold the end of the answer."""
    last = -1.0
    while pump.pushed_seconds != last:
        last = pump.pushed_seconds
        await asyncio.sleep(0.3)
    await source.wait_for_playout()


def _kind(tool: ToolSpec) -> str:
    return "http" if tool.url is not None else "rpc" if tool.rpc is not None else "builtin"


def _tool_span(parent: spans.Parent, name: str, kind: str, call_id: str) -> spans.Span:
    return spans.start_span(
        f"{genai.EXECUTE_TOOL} {name}",
        parent,
        genai.tool_attributes(name=name, kind=kind, call_id=call_id),
    )


def _has_audio(response: ev.Response) -> bool:
    return any(
        isinstance(part, dict) and part.get("type") == "output_audio"
        for item in response.output
        for part in item.get("content") or []
    )
