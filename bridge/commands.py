"""The subcommands' bodies. Each returns the process exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.settings.config import ConfigError, SessionOverrides, Settings

if TYPE_CHECKING:
    from aiohttp import web

    from bridge.service.workers import WorkerPool

logger = logging.getLogger("bridge")


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("livekit_api_key", "livekit_api_secret", "openai_api_key")
    metrics_dir = _metrics_dir()
    # Imported only now: prometheus_client picks its multiprocess mode at import time.
    from bridge.logs import network_reason
    from bridge.metrics import SESSION_CAPACITY
    from bridge.service.http_guard import GuardedAppRunner
    from bridge.service.server import BridgeServer
    from bridge.service.workers import WorkerPool

    SESSION_CAPACITY.set(settings.max_sessions)
    host = args.host or settings.server_host
    port = args.port or settings.server_port
    count = args.workers or settings.workers or os.cpu_count() or 1
    server: BridgeServer | None = None

    def ended(room: str, reason: str, duplicate: bool) -> None:
        if server is not None:
            server.dispatcher.on_room_ended(room, reason, duplicate)

    def lost(room: str, overrides: SessionOverrides | None) -> None:
        if server is not None:
            server.dispatcher.rehome(room, overrides)

    pool = WorkerPool(settings, count, config_path=args.config, on_ended=ended, on_lost=lost)
    server = BridgeServer(settings, pool, workers_alive=lambda: pool.alive)
    pool.on_change = server.dispatcher.changed
    runner = GuardedAppRunner(server.app(), server.rejections, access_log=None)
    await runner.setup()
    try:
        site = _site(runner, host, port, args.fd)
        await pool.start()
        try:
            await site.start()
        except OSError as exc:  # the port is taken, the host is not ours or does not resolve
            reason = network_reason(exc) or str(exc)
            raise ConfigError(
                f"cannot listen on {host}:{port}: {reason} (--host/--port, "
                "BRIDGE_SERVER_HOST/BRIDGE_SERVER_PORT)"
            ) from None
        server.start()
        logger.info(
            "serving on %s with %d workers, up to %d sessions",
            site.name,
            count,
            settings.max_sessions,
        )
        await _until_signal()
        # A second signal from now on exits at once.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _exit_now, pool)
        await server.drain()
        await pool.aclose()
    finally:
        await server.aclose()
        await runner.cleanup()
        await pool.aclose()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    logger.info("stopped")
    return 0


def _site(runner: web.AppRunner, host: str, port: int, fd: int | None) -> web.BaseSite:
    """``--fd N``: the listening socket a parent bound and handed down; else host and port."""
    from aiohttp import web

    if fd is None:
        return web.TCPSite(runner, host, port)
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        raise ConfigError(f"--fd {fd} is not a socket") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError(f"--fd {fd} is not a stream socket")
    return web.SockSite(runner, sock)


def _metrics_dir() -> str:
    """One prometheus_client multiprocess directory for this process and its workers."""
    existing = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if existing:
        for stale in (*Path(existing).glob("*.db"), *Path(existing).glob("exemplars-*.json")):
            stale.unlink()
        return existing
    path = tempfile.mkdtemp(prefix="room-bridge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _exit_now(pool: WorkerPool) -> None:
    logger.warning("second signal: exiting now")
    pool.kill()
    os._exit(1)


async def run_join(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.logs import one_line, redact_tokens
    from bridge.room.capacity import SessionBudget
    from bridge.room.worker import JOIN_TIMEOUT, RoomWorker
    from bridge.service.start_checks import start_problems

    settings.require("livekit_api_key", "livekit_api_secret", "openai_api_key")
    # LiveKit and the model service, asked first: a mistake there is one clear line and exit 1,
    # not the SDK's connect retries and a traceback.
    problems = await start_problems(settings, args.room)
    for problem in problems:
        print(f"room-bridge: {problem.line}", file=sys.stderr)
    if problems:
        return 1
    worker = RoomWorker(settings, args.room, budget=SessionBudget(settings.max_sessions))
    try:
        try:
            await worker.start()
        except Exception as exc:  # the SDK raises ConnectError (an Exception) or we time out
            detail = redact_tokens(str(exc)) or f"no answer in {JOIN_TIMEOUT:g} s"
            print(
                f"room-bridge: could not join room {args.room!r} at {settings.livekit_url}: "
                f"{one_line(detail, 300)}",
                file=sys.stderr,
            )
            return 1
        done = asyncio.ensure_future(worker.wait())
        signalled = asyncio.ensure_future(_until_signal())
        await asyncio.wait({done, signalled}, return_when=asyncio.FIRST_COMPLETED)
        for fut in (done, signalled):
            fut.cancel()
        await asyncio.gather(done, signalled, return_exceptions=True)
    finally:
        await worker.aclose("stopped" if worker.end_reason is None else worker.end_reason)
    logger.info("left room %s: %s", args.room, worker.end_reason)
    return 0


async def run_emulator(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import SecretStr, ValidationError

    from bridge.emulator.app import EmulatorServer
    from bridge.emulator.options import EmulatorOptions
    from bridge.logs import network_reason

    try:
        given = json.loads(args.options) if args.options else {}
        if not isinstance(given, dict):
            raise ConfigError("--options must be a JSON object")
        key = args.api_key or (
            settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        )
        if key:
            given["api_key"] = SecretStr(key)
        options = EmulatorOptions.model_validate(given)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options is not JSON: {exc.msg}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"invalid emulator option {where}: {err['msg']}") from None
    server = EmulatorServer(settings, options, host=args.host, port=args.port)
    try:
        await server.start()
    except OSError as exc:  # the port is taken, or the host is not ours
        await server.aclose()
        reason = network_reason(exc) or str(exc)
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {reason} (--host/--port)"
        ) from None
    try:
        print(f"emulator listening: OPENAI_BASE_URL={server.base_url}", flush=True)
        await _until_signal()
    finally:
        await server.aclose()
    return 0


async def run_dev(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.local.dev import DevOptions, run_until_signal

    if args.no_human and args.exit:
        raise ConfigError("--exit needs the simulated human; --no-human runs until Ctrl-C")
    opts = DevOptions(
        room=args.room,
        turns=args.turns,
        exit_after=args.exit,
        human=not args.no_human,
        page_port=args.page_port,
        traces=args.traces,
    )
    return await run_until_signal(settings, opts)
