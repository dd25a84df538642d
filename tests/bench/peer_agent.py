"""The peer of the side-by-side benchmark (tests/bench/peer_bench.py): livekit-agents with
livekit-plugins-openai's ``RealtimeModel`` (WebSocket to the model), configured like the bridge.

A program of its own, run with the peer's virtualenv (never imported by ``bridge/`` or by the
bench, which has a newer ``livekit``)::

    .venv-peer/bin/python tests/bench/peer_agent.py start

Environment: ``LIVEKIT_URL``/``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET`` (the worker registers at
``{url}/agent``), ``OPENAI_API_KEY``, ``PEER_BASE_URL`` (the emulator's ``/v1``),
``PEER_AGENT_NAME`` (explicit dispatch only), ``PEER_EXECUTOR`` (``process``: one job process per
session, the default of livekit-agents; ``thread``: jobs in the worker process),
``PEER_IDLE_PROCESSES`` (warm job processes), and ``PEER_SESSION``: the session the bridge sends
(tests/bench/peer_bench.py builds it with the bridge's own ``build_session``), of which the
model, instructions, voice, input transcription and server VAD are used.

Set up for a fair run on a shared 2-core box (docs/performance.md, "Side by side with
livekit-agents"): no local VAD or turn-detector models
(``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE=0``, ``vad=None``: the server's VAD decides turns,
as with the bridge), recording off, no 20-minute reconnects
(``max_session_duration=None``), a load function that never reports the worker full (the
default compares *machine-wide* CPU with 0.7 and refuses jobs), a free port for its health
server.
"""

from __future__ import annotations

import json
import os
from typing import Any

os.environ["LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"] = "0"

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobExecutorType,
    cli,
)
from livekit.plugins import openai
from openai.types.realtime import AudioTranscription
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad

SESSION: dict[str, Any] = json.loads(os.environ.get("PEER_SESSION") or "{}")
AUDIO_IN: dict[str, Any] = SESSION.get("audio", {}).get("input", {})
AUDIO_OUT: dict[str, Any] = SESSION.get("audio", {}).get("output", {})


def never_full() -> float:
    """The worker's load as reported to LiveKit: always room for another job."""
    return 0.0


def realtime_model() -> openai.realtime.RealtimeModel:
    detection = AUDIO_IN.get("turn_detection")
    transcription = AUDIO_IN.get("transcription")
    return openai.realtime.RealtimeModel(
        model=SESSION.get("model", "gpt-realtime"),
        voice=AUDIO_OUT.get("voice", "alloy"),
        base_url=os.environ["PEER_BASE_URL"],
        api_key=os.environ["OPENAI_API_KEY"],
        turn_detection=ServerVad(**detection) if detection else None,
        input_audio_transcription=AudioTranscription(**transcription) if transcription else None,
        max_session_duration=None,
    )


executor = JobExecutorType(os.environ.get("PEER_EXECUTOR", "process"))
server = AgentServer(
    job_executor_type=executor,
    load_fnc=never_full,
    load_threshold=float("inf"),
    num_idle_processes=int(os.environ.get("PEER_IDLE_PROCESSES", "1")),
    port=0,
)


@server.rtc_session(agent_name=os.environ.get("PEER_AGENT_NAME", "peer"))  # type: ignore[untyped-decorator]
async def entrypoint(ctx: JobContext) -> None:
    session: AgentSession[None] = AgentSession(llm=realtime_model(), vad=None)
    await session.start(
        room=ctx.room,
        agent=Agent(instructions=SESSION.get("instructions", "")),
        record=False,
    )


if __name__ == "__main__":
    cli.run_app(server)
