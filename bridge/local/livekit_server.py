"""A local ``livekit-server`` for tests and ``dev``: find (or build) it, start it on free loopback
ports with a generated config, wait until it answers, stop it. A start that loses a port race
(another process bound one of its ports first) is retried whole with fresh ports
(``bridge.local.ports``).

Every packet stays on this machine: the server binds 127.0.0.1 only, advertises 127.0.0.1 as its
only ICE candidate address, never asks a STUN server for its public address, and hands clients a
STUN server on an unused loopback port (LiveKit clients otherwise fall back to a public one).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
from livekit import api

from bridge.local import ports
from bridge.local.ports import free_port
from bridge.processes import stop_process

logger = logging.getLogger(__name__)

LIVEKIT_SERVER_VERSION = "v1.13.5"
LIVEKIT_SERVER_MODULE = "github.com/livekit/livekit-server/cmd/server"
BINARY_NAME = "livekit-server"
# Whole starts tried before a lost port race is the caller's problem.
START_ATTEMPTS = 5

__all__ = ["LiveKitServer", "LiveKitServerConfig", "LiveKitServerError", "PortInUse", "free_port"]


class LiveKitServerError(RuntimeError):
    pass


class PortInUse(LiveKitServerError):
    """livekit-server could not bind a port of its config: another process took it first."""


def tools_dir() -> Path:
    """Where a built livekit-server is cached: ``.tools/`` in a source checkout (git-ignored),
    else the user cache directory."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").exists():
        return root / ".tools"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "realtime-room-bridge"


def cached_binary() -> Path:
    return tools_dir() / "bin" / f"{BINARY_NAME}-{LIVEKIT_SERVER_VERSION}"


def find_binary() -> Path | None:
    """``$LIVEKIT_SERVER_BIN``, then ``livekit-server`` on PATH, then the cached build."""
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LiveKitServerError(f"LIVEKIT_SERVER_BIN={explicit} is not an executable file")
        return path
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return Path(on_path)
    cached = cached_binary()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    return None


def ensure_binary() -> Path:
    """Find livekit-server, building it with ``go install`` into the tools dir when absent.

    The build takes minutes; a file lock makes concurrent callers wait for one build.
    """
    found = find_binary()
    if found is not None:
        return found
    target = cached_binary()
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        go = shutil.which("go")
        if go is None:
            raise LiveKitServerError(
                "livekit-server is not on PATH and Go is not installed to build it"
            )
        logger.warning(
            "building livekit-server %s with go install (once; takes a few minutes)",
            LIVEKIT_SERVER_VERSION,
        )
        with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
            env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
            proc = subprocess.run(
                [go, "install", f"{LIVEKIT_SERVER_MODULE}@{LIVEKIT_SERVER_VERSION}"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-5:]
                raise LiveKitServerError("go install livekit-server failed: " + " | ".join(tail))
            built = Path(gobin) / "server"
            os.replace(built, target)
    return target


@dataclass
class LiveKitServerConfig:
    api_key: str = field(default_factory=lambda: "API" + secrets.token_hex(6))
    api_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    port: int = 0
    rtc_tcp_port: int = 0
    rtc_udp_port: int = 0
    webhook_urls: list[str] = field(default_factory=list)
    # Rooms close this many seconds after the last participant leaves.
    empty_timeout: int = 10
    departure_timeout: int = 5
    log_level: str = "warn"

    def allocate(self) -> None:
        """Pick the ports left at 0."""
        self.port = self.port or ports.free_port()
        self.rtc_tcp_port = self.rtc_tcp_port or ports.free_port()
        self.rtc_udp_port = self.rtc_udp_port or ports.free_port(socket.SOCK_DGRAM)

    def render(self) -> str:
        """The server's YAML config (JSON is YAML)."""
        doc: dict[str, object] = {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "rtc": {
                "tcp_port": self.rtc_tcp_port,
                "udp_port": self.rtc_udp_port,
                "use_external_ip": False,
                "node_ip": "127.0.0.1",
                "enable_loopback_candidate": True,
                "ips": {"includes": ["127.0.0.1/32"]},
                # Unused loopback port: clients get a STUN server that never answers, instead of
                # falling back to a public one.
                "stun_servers": [f"127.0.0.1:{ports.free_port(socket.SOCK_DGRAM)}"],
            },
            "turn": {"enabled": False},
            "keys": {self.api_key: self.api_secret},
            "room": {
                "empty_timeout": self.empty_timeout,
                "departure_timeout": self.departure_timeout,
            },
            "logging": {"level": self.log_level, "json": False},
        }
        if self.webhook_urls:
            doc["webhook"] = {"api_key": self.api_key, "urls": self.webhook_urls}
        return json.dumps(doc, indent=2)


class LiveKitServer:
    """A running livekit-server process. ``async with LiveKitServer(cfg) as server: ...``"""

    def __init__(self, config: LiveKitServerConfig | None = None, binary: Path | None = None):
        self.config = config or LiveKitServerConfig()
        self._binary = binary
        self._proc: asyncio.subprocess.Process | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def api_secret(self) -> str:
        return self.config.api_secret

    def log_tail(self, lines: int = 30) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    async def start(self, timeout: float = 20.0) -> None:
        """Start it and wait until it accepts our API key. Ports the config leaves at 0 are
        picked here, and picked afresh for a new start when one was taken first (up to
        ``START_ATTEMPTS`` starts)."""
        binary = self._binary
        if binary is None:
            binary = await asyncio.to_thread(ensure_binary)
        given = (self.config.port, self.config.rtc_tcp_port, self.config.rtc_udp_port)
        for attempt in range(1, START_ATTEMPTS + 1):
            self.config.port, self.config.rtc_tcp_port, self.config.rtc_udp_port = given
            self.config.allocate()
            try:
                await self._start_once(binary, timeout)
            except PortInUse as exc:
                if attempt == START_ATTEMPTS or all(given):
                    raise
                logger.warning(
                    "livekit-server start %d of %d lost a port race (%s); again on fresh ports",
                    attempt,
                    START_ATTEMPTS,
                    exc,
                )
            else:
                logger.info("livekit-server ready on %s", self.url)
                return

    async def _start_once(self, binary: Path, timeout: float) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="livekit-")
        workdir = Path(self._workdir.name)
        config_path = workdir / "livekit.yaml"
        config_path.write_text(self.config.render())
        self._log_path = workdir / "livekit.log"
        with self._log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                str(binary),
                "--config",
                str(config_path),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.aclose()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        """Until the server on our port accepts our key: a 200 from whatever else took the port
        (another test run's livekit-server) is not ours, and our process exits meanwhile."""
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_grants(api.VideoGrants(room_list=True))
            .to_jwt()
        )
        probe = f"{self.http_url}/twirp/livekit.RoomService/ListRooms"
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    tail = self.log_tail()
                    error = PortInUse if ports.is_address_in_use(tail) else LiveKitServerError
                    raise error(f"livekit-server exited with {self._proc.returncode}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.post(probe, json={}, headers=headers)
                    if response.status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise LiveKitServerError(f"livekit-server did not answer in {timeout:g} s")

    async def aclose(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process(proc, timeout=5.0, group=True)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    async def __aenter__(self) -> LiveKitServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
