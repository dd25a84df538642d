"""``python -m bridge`` / ``room-bridge``: serve | join | emulator | dev."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.billing.models import deprecation_warning
from bridge.logs import setup_logging
from bridge.settings.config import ConfigError, Settings, load_settings
from bridge.tracing.export import Tracing, start_tracing

logger = logging.getLogger("bridge")

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
# What ``add_subparsers`` returns (argparse names no public type for it).
Subparsers = argparse._SubParsersAction


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """``--config``, ``--log-level``, ``--log-format``: accepted before or after the subcommand.

    On the subcommands their default is SUPPRESS, so an option given before the subcommand is
    not overwritten by the subcommand's unset default.
    """
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="PATH",
        help="TOML settings file (default: config/bridge.toml when present)",
    )
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=default
    )
    parser.add_argument("--log-format", choices=["text", "json"], default=default)


def _room_name(text: str) -> str:
    """A room name LiveKit takes: 1 to 256 characters, no surrounding spaces."""
    name = text.strip()
    if not name or len(name) > 256:
        raise argparse.ArgumentTypeError("a room name is 1 to 256 characters")
    return name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="room-bridge",
        description=(
            "Bring OpenAI's Realtime speech-to-speech model into LiveKit rooms. Settings come "
            "from the environment (LIVEKIT_*, OPENAI_*, BRIDGE_*) and an optional TOML file."
        ),
    )
    _global_options(parser, default=None)
    parser.add_argument("--version", action="version", version=f"room-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_serve_parser, _join_parser, _emulator_parser, _dev_parser):
        _global_options(add(sub), default=argparse.SUPPRESS)
    return parser


def _serve_parser(sub: Subparsers[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    serve = sub.add_parser(
        "serve",
        help="run the dispatch service (LiveKit webhooks -> room workers)",
        description=(
            "HTTP service: POST /webhook (LiveKit room webhooks), POST/DELETE /dispatch, "
            "GET /healthz, /readyz, /metrics. Joins eligible rooms, reconciles periodically, "
            "drains on SIGTERM."
        ),
    )
    serve.add_argument("--host", help="bind address (default: server_host setting)")
    serve.add_argument("--port", type=int, help="port (default: server_port setting)")
    serve.add_argument(
        "--fd",
        type=int,
        metavar="N",
        help="serve on the listening socket inherited as file descriptor N instead of "
        "--host/--port (a supervisor or a local harness bound it; no port race)",
    )
    serve.add_argument(
        "--workers", type=int, help="room-worker processes (default: workers setting; 0 = cores)"
    )
    return serve


def _join_parser(sub: Subparsers[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    join = sub.add_parser(
        "join",
        help="join one room as the agent and bridge every human in it",
        description=(
            "Join ROOM as an agent participant; each human gets their own Realtime call. Stays "
            "until the room has no humans left, the room closes, or Ctrl-C."
        ),
    )
    join.add_argument("--room", required=True, type=_room_name, help="LiveKit room name")
    return join


def _emulator_parser(sub: Subparsers[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    emulator = sub.add_parser(
        "emulator",
        help="run the local Realtime API emulator",
        description=(
            "A local stand-in for the OpenAI Realtime API (WebRTC calls, client secrets, "
            "events, a fake model). Serves /v1/realtime/... on HOST:PORT."
        ),
    )
    emulator.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8099, help="port (default 8099)")
    emulator.add_argument(
        "--api-key",
        default=None,
        help="the key it accepts (default: OPENAI_API_KEY, else 'sk-emulator')",
    )
    emulator.add_argument(
        "--options",
        default=None,
        metavar="JSON",
        help="emulator options as JSON (voice mode, fault injection, ...; see docs/emulator.md)",
    )
    return emulator


def _dev_parser(sub: Subparsers[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    dev = sub.add_parser(
        "dev",
        help="run the whole local stack with a simulated human (make demo)",
        description=(
            "Starts livekit-server (webhook pointed at the bridge), the emulator (unless "
            "OPENAI_API_KEY is set), `serve`, the page (talk to the AI in a browser: its "
            "address is printed on a line of its own) and a simulated human who joins a room "
            "and speaks; prints what flows. Ctrl-C stops everything."
        ),
    )
    dev.add_argument(
        "--room", default="demo", type=_room_name, help="room the simulated human joins"
    )
    dev.add_argument(
        "--turns", type=int, default=3, help="utterances the simulated human speaks (0 = forever)"
    )
    dev.add_argument(
        "--exit", action="store_true", help="exit after the turns instead of waiting for Ctrl-C"
    )
    dev.add_argument(
        "--no-human",
        action="store_true",
        help="no simulated human: you are the human, on the page",
    )
    dev.add_argument(
        "--page-port",
        type=int,
        default=8788,
        help="port of the page on 127.0.0.1 (default 8788, a free one if taken; 0 = any free)",
    )
    dev.add_argument(
        "--traces",
        action="store_true",
        help="also start Jaeger (built once with Go) on 127.0.0.1 and send the bridge's traces "
        "to it; its UI address is printed (default port 16686, a free one if taken)",
    )
    return dev


def _commands() -> dict[str, Command]:
    # Imported lazily so `--help` and config errors stay fast and free of heavy imports.
    from bridge.commands import run_dev, run_emulator, run_join, run_serve

    return {"serve": run_serve, "join": run_join, "emulator": run_emulator, "dev": run_dev}


def warn_deprecated(settings: Settings, today: date | None = None) -> list[str]:
    """One warning line per deprecated (or shut down) model in ``settings``, at start."""
    today = today or datetime.now(UTC).date()
    lines = []
    for setting in ("model", "transcription_model"):
        name = getattr(settings, setting)
        line = deprecation_warning(setting, name, today) if name else None
        if line is not None:
            logger.warning(line)
            lines.append(line)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.log_format:
        overrides["log_format"] = args.log_format
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"room-bridge: {line}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    if args.command != "emulator":
        warn_deprecated(settings)
    command = _commands()[args.command]
    # Spans come from the processes that serve rooms (serve's workers start their own); with no
    # OTLP endpoint in the environment this installs nothing.
    tracing = start_tracing(args.command) if args.command in ("serve", "join") else Tracing()
    try:
        return asyncio.run(command(args, settings))
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"room-bridge: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        tracing.shutdown()
