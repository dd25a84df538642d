"""The subcommands' bodies. Each returns the process exit code."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bridge.config import Settings

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
    print("room-bridge join: not yet available (room worker issue)")
    return 1


async def run_emulator(args: argparse.Namespace, settings: Settings) -> int:
    print("room-bridge emulator: not yet available (RealtimeCall/emulator issue)")
    return 1


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
