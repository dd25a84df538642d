"""``room-bridge dev``: the whole local stack in one command, and a simulated human to talk to it.

    livekit-server (free loopback ports, webhooks -> serve; retried on a lost port race)
    emulator       (in this process; skipped when OPENAI_API_KEY is set: the real API is used)
    serve          (a child process, exactly as deployed, on a socket we bound for it,
                   registered as a LiveKit agent worker)
    a human        (LiveKit SDK participant) who joins the room, speaks, and prints what flows;
                   their token asks for the agent by name (LiveKit agent dispatch), the way
                   production front ends do

With the emulator the human speaks generated tones (the emulator transcribes them as
"utterance N"); with the real API, tones are not words, so the human types its turns into the
room chat instead. Ctrl-C stops everything, bridge sessions drained and calls hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import numpy as np
from livekit import rtc
from pydantic import SecretStr

from bridge.aio import TaskSet
from bridge.audio import FRAME_SAMPLES, SAMPLE_RATE
from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.voice import tone
from bridge.local.jaeger import UI_PORT as JAEGER_UI_PORT
from bridge.local.jaeger import Jaeger
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.local.page_server import PageServer, Room
from bridge.local.ports import loopback_listener
from bridge.local.tokens import participant_token
from bridge.processes import stop_process
from bridge.room.identity import agent_identity
from bridge.room.transcripts import FINAL, TOPIC
from bridge.settings.config import Settings
from bridge.tracing.export import DEFAULT_SERVICE_NAME

EMULATOR_KEY = "sk-emulator-dev"
TYPED_TURNS = [
    "Hello! Can you hear me?",
    "Tell me one interesting fact about the ocean, briefly.",
    "Thanks, that is all for now.",
]


def say(tag: str, text: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} {tag:<14} {text}", flush=True)


@dataclass
class _Heard:
    answers: int = 0
    last_speech_end: float | None = None
    first_answer_frame: float | None = None
    latencies: list[float] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)


class SimulatedHuman:
    """A participant that speaks (or types) turns and prints the agent's answers."""

    def __init__(self, server: LiveKitServer, room: str, *, typed: bool, agent: str) -> None:
        self._server = server
        self._agent = agent
        self._room_name = room
        self._typed = typed
        self.room = rtc.Room()
        self._source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=200)
        self._heard = _Heard()
        self._tasks = TaskSet("simulated-human")
        self.agent_ready = asyncio.Event()

    async def join(self) -> None:
        token = participant_token(
            self._server.api_key,
            self._server.api_secret,
            room=self._room_name,
            identity="simulated-human",
            name="Simulated human",
            # Agent dispatch: creating the room with this token brings the agent.
            agent=self._agent,
        )
        self.room.on("participant_connected", self._on_participant)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("track_subscribed", self._on_track)
        self.room.register_text_stream_handler(TOPIC, self._on_transcript)
        await asyncio.wait_for(self.room.connect(self._server.url, token), 15)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        say("[human]", f"joined room {self._room_name!r} and published a microphone")
        self._tasks.create_task(self._keep_mic_alive(), name="mic")

    async def _keep_mic_alive(self) -> None:
        quiet = np.zeros(FRAME_SAMPLES, dtype=np.int16).tobytes()
        self._speaking = False
        while True:
            if not self._speaking:
                await self._source.capture_frame(
                    rtc.AudioFrame(quiet, SAMPLE_RATE, 1, FRAME_SAMPLES)
                )
            await asyncio.sleep(0.02)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            say("[agent]", f"{participant.identity} joined the room")

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if "lk.agent.state" in changed:
            say("[agent state]", changed["lk.agent.state"])
            if changed["lk.agent.state"] == "listening":
                self.agent_ready.set()

    def _on_track(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if isinstance(track, rtc.RemoteAudioTrack):
            say("[agent]", f"publishes its voice for us on track {track.sid}")
            self._tasks.create_task(self._listen(track), name="listen")

    async def _listen(self, track: rtc.RemoteAudioTrack) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for event in stream:
                pcm = np.frombuffer(event.frame.data, dtype=np.int16)
                loud = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 500
                heard = self._heard
                if loud and heard.last_speech_end is not None and heard.first_answer_frame is None:
                    heard.first_answer_frame = time.monotonic()
                    latency = heard.first_answer_frame - heard.last_speech_end
                    heard.latencies.append(latency)
                    say(
                        "[agent voice]",
                        f"first answer audio {latency * 1000:.0f} ms after we stopped",
                    )
        finally:
            await stream.aclose()

    def _on_transcript(self, reader: rtc.TextStreamReader, sender: str) -> None:
        self._tasks.create_task(self._read_transcript(reader, sender), name="transcript")

    async def _read_transcript(self, reader: rtc.TextStreamReader, sender: str) -> None:
        text = await reader.read_all()
        if (reader.info.attributes or {}).get(FINAL) != "true":
            return
        if sender == self.room.local_participant.identity:
            say("[human said]", text)
        else:
            say("[agent said]", text)
            self._heard.answers += 1
            self._heard.answered.set()

    async def turn(self, n: int) -> None:
        heard = self._heard
        heard.answered.clear()
        heard.first_answer_frame = None
        if self._typed:
            text = TYPED_TURNS[(n - 1) % len(TYPED_TURNS)]
            say("[human types]", text)
            await asyncio.wait_for(self.room.local_participant.send_text(text, topic="lk.chat"), 10)
            heard.last_speech_end = time.monotonic()
        else:
            seconds = 0.8 + 0.4 * (n % 3)
            say("[human]", f"speaks utterance {n} ({seconds:.1f} s)")
            await self._speak(seconds, 300 + 40 * n)
        try:
            await asyncio.wait_for(heard.answered.wait(), 30)
        except TimeoutError:
            say("[human]", "no answer within 30 s")

    async def _speak(self, seconds: float, freq: float) -> None:
        self._speaking = True
        samples = tone(freq, seconds, amplitude=0.3)
        n = len(samples)
        start = time.monotonic()
        try:
            for i in range(0, n - FRAME_SAMPLES + 1, FRAME_SAMPLES):
                chunk = samples[i : i + FRAME_SAMPLES].tobytes()
                await self._source.capture_frame(
                    rtc.AudioFrame(chunk, SAMPLE_RATE, 1, FRAME_SAMPLES)
                )
                await asyncio.sleep(
                    max(0.0, start + (i // FRAME_SAMPLES + 1) * 0.02 - time.monotonic())
                )
        finally:
            self._speaking = False
            self._heard.last_speech_end = time.monotonic()

    @property
    def latencies(self) -> list[float]:
        return self._heard.latencies

    async def leave(self) -> None:
        await self._tasks.aclose()
        with contextlib.suppress(Exception):
            self.room.unregister_text_stream_handler(TOPIC)
        await asyncio.wait_for(self.room.disconnect(), 10)
        await self._source.aclose()


@contextlib.asynccontextmanager
async def _serve(
    env: dict[str, str], listener: socket.socket
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``serve`` on the listener we bound (inherited as ``--fd``: nothing can take its port)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "serve",
        "--fd",
        str(listener.fileno()),
        "--workers",
        "1",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=(listener.fileno(),),
        # Ctrl-C reaches only us; we drain the bridge with one SIGTERM.
        start_new_session=True,
    )
    listener.close()  # the child has its own copy
    assert proc.stderr is not None
    relay = asyncio.ensure_future(_relay(proc.stderr))
    try:
        yield proc
    finally:
        await stop_process(proc, timeout=30)
        await asyncio.wait_for(relay, 5)


async def _registered(port: int, agent: str, *, timeout: float) -> bool:
    """Wait until ``serve`` is registered with LiveKit as an agent worker (and say so)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status = (await client.get(f"http://127.0.0.1:{port}/status")).json()
                if (status.get("agent_dispatch") or {}).get("state") == "registered":
                    say("[livekit]", f"bridge registered as agent {agent!r} (agent dispatch)")
                    return True
            await asyncio.sleep(0.2)
    say("[dev]", "the bridge did not register with LiveKit; see the [bridge] lines above")
    return False


async def _relay(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        say("[bridge]", line.decode(errors="replace").rstrip())


@dataclass(frozen=True)
class DevOptions:
    room: str = "demo"
    turns: int = 3
    exit_after: bool = False
    human: bool = True  # False: `--no-human`, a person on the page is the human
    page_port: int = 8788
    traces: bool = False  # `--traces`: Jaeger beside the stack, the bridge's spans sent to it


async def run(settings: Settings, opts: DevOptions) -> int:
    room, turns, exit_after = opts.room, opts.turns, opts.exit_after
    # The [tag] lines are the output here; our own INFO logs would only interleave with them.
    if settings.log_level == "INFO":
        logging.getLogger("bridge").setLevel(logging.WARNING)
    real_api = settings.openai_api_key is not None
    async with contextlib.AsyncExitStack() as stack:
        listener = stack.enter_context(loopback_listener())
        bridge_port = int(listener.getsockname()[1])
        config = LiveKitServerConfig(webhook_urls=[f"http://127.0.0.1:{bridge_port}/webhook"])
        server = await stack.enter_async_context(LiveKitServer(config))
        say("[livekit]", f"livekit-server {server.url} (webhooks -> bridge :{bridge_port})")
        env = {
            **os.environ,
            "LIVEKIT_URL": server.url,
            "LIVEKIT_API_KEY": server.api_key,
            "LIVEKIT_API_SECRET": server.api_secret,
            "BRIDGE_LOG_LEVEL": "WARNING",
            "BRIDGE_DRAIN_TIMEOUT": "2",
            "BRIDGE_RECONCILE_INTERVAL": "5",
            # Only agent dispatch (the human's token) brings the agent, as in production.
            "BRIDGE_ROOMS": "metadata",
            "BRIDGE_AGENT_DISPATCH": "true",
        }
        env |= await _model(stack, settings)
        if opts.traces:
            env |= await _traces(stack)
        await stack.enter_async_context(_serve(env, listener))
        if not await _registered(bridge_port, settings.agent_name, timeout=60):
            return 1
        page = await stack.enter_async_context(
            PageServer(_page_room(settings, server, room, real_api=real_api), opts.page_port)
        )
        if not opts.human:
            say("[you]", "no simulated human (--no-human); Ctrl-C stops everything")
            say("[page]", "talk to the AI in your browser (several tabs = several people):")
            print(page.url, flush=True)
            await asyncio.Event().wait()  # until Ctrl-C cancels us
        say("[page]", "talk to the AI in your browser (several tabs = several people):")
        print(page.url, flush=True)
        human = SimulatedHuman(server, room, typed=real_api, agent=settings.agent_name)
        await human.join()
        stack.push_async_callback(human.leave)
        try:
            await asyncio.wait_for(human.agent_ready.wait(), 30)
        except TimeoutError:
            say("[dev]", "the agent did not join within 30 s; see the [bridge] lines above")
            return 1
        n = 0
        while turns == 0 or n < turns:
            n += 1
            await human.turn(n)
            await asyncio.sleep(1.0)
        if human.latencies:
            ms = sorted(x * 1000 for x in human.latencies)
            say("[summary]", f"{len(ms)} answers; answer latency median {ms[len(ms) // 2]:.0f} ms")
        if not exit_after:
            say(
                "[you]",
                f"other LiveKit clients: url {server.url}, a token from POST {page.url}token",
            )
            say("[you]", "Ctrl-C stops everything. Now talk to the AI yourself in your browser:")
            print(page.url, flush=True)
            await asyncio.Event().wait()  # until Ctrl-C cancels us
    say("[dev]", "stopped")
    return 0


async def _model(stack: contextlib.AsyncExitStack, settings: Settings) -> dict[str, str]:
    """The real API when OPENAI_API_KEY is set, else the emulator here; the environment that
    points ``serve`` at it."""
    if settings.openai_api_key is not None:
        say("[model]", f"OPENAI_API_KEY is set: the real API at {settings.openai_base_url}")
        return {}
    local = settings.model_copy(update={"ice_host_addresses": ["127.0.0.1"]})
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    emulator = await stack.enter_async_context(EmulatorServer(local, options))
    say("[model]", f"no OPENAI_API_KEY: the local emulator at {emulator.base_url}")
    return {
        "OPENAI_API_KEY": EMULATOR_KEY,
        "OPENAI_BASE_URL": emulator.base_url,
        "BRIDGE_ICE_HOST_ADDRESSES": "127.0.0.1",
    }


async def _traces(stack: contextlib.AsyncExitStack) -> dict[str, str]:
    """Jaeger on loopback; the environment that sends ``serve``'s spans to it."""
    jaeger = await stack.enter_async_context(Jaeger(ui_port=JAEGER_UI_PORT))
    say("[traces]", f"Jaeger {jaeger.ui_url} (service {DEFAULT_SERVICE_NAME!r}: a trace per room)")
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": DEFAULT_SERVICE_NAME,
        # Spans in Jaeger within a second of their end (the SDK's default waits 5 s).
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }


def _page_room(settings: Settings, server: LiveKitServer, room: str, *, real_api: bool) -> Room:
    return Room(
        livekit_url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        name=room,
        agent_identity=agent_identity(settings, room),
        agent_name=settings.agent_name,
        model="openai" if real_api else "emulator",
        model_label=(
            f"OpenAI Realtime API ({settings.model})"
            if real_api
            else "local emulator (tones, not speech)"
        ),
        audience=settings.audience,
    )


async def run_until_signal(settings: Settings, opts: DevOptions) -> int:
    """``run``, stopped cleanly by Ctrl-C or SIGTERM (a second one interrupts the cleanup)."""
    main = asyncio.ensure_future(run(settings, opts))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    try:
        return await main
    except asyncio.CancelledError:
        say("[dev]", "stopped")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
