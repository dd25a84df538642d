"""The subcommands' bodies. Each returns the process exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal

from bridge.config import ConfigError, Settings

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
    print("room-bridge serve: not yet available (dispatch service issue)")
    return 1


async def run_join(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.room import RoomWorker

    settings.require("livekit_api_key", "livekit_api_secret", "openai_api_key")
    worker = RoomWorker(settings, args.room)
    try:
        await worker.start()
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
    async with EmulatorServer(settings, options, host=args.host, port=args.port) as server:
        print(f"emulator listening: OPENAI_BASE_URL={server.base_url}", flush=True)
        await _until_signal()
    return 0


async def run_dev(args: argparse.Namespace, settings: Settings) -> int:
    from livekit import api

    from bridge.livekit_server import LiveKitServer, LiveKitServerConfig

    async with LiveKitServer(LiveKitServerConfig()) as server:
        token = (
            api.AccessToken(server.api_key, server.api_secret)
            .with_identity("you")
            .with_grants(api.VideoGrants(room_join=True, room=args.room))
            .to_jwt()
        )
        print(f"livekit-server running at {server.url}  (Ctrl-C stops it)")
        print(f"join room {args.room!r} with token:\n{token}")
        await _until_signal()
    return 0
