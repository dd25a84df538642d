"""A local Jaeger for traces: the all-in-one ``jaeger`` (v2) binary, found or built once, started
on loopback with in-memory storage, OTLP/HTTP in and its UI and query API out.

Found as ``$JAEGER_BIN``, else ``jaeger`` on PATH, else the cached build beside livekit-server's
(``<tools dir>/bin/jaeger-v1.75.0``); failing that it is built once from
``config/tools/jaeger/`` (a small Go module of ours pinning ``github.com/jaegertracing/jaeger``
v1.75.0 as a tool: ``go install pkg@version`` refuses a module with replace directives), which
takes several minutes and needs a source checkout and Go.

Jaeger's Go module carries no UI (its release builds embed one built with npm from
jaegertracing/jaeger-ui, which no package registry serves), so the UI comes from
``config/tools/jaeger/jaeger-ui-v1.75.0.tar.xz``: jaeger-ui v1.75.0 (Apache-2.0, its LICENSE
inside), built from that tag with ``npm ci`` + ``npm run build`` (``make jaeger-ui``), unpacked
once into the tools dir and served as the query extension's ``ui.assets_path``. Without it (an
installed wheel) the API works and the UI is Jaeger's placeholder page.

Every port is on 127.0.0.1: OTLP/HTTP in (``otlp_endpoint``), the UI and its JSON API
(``ui_url``: ``/api/traces/<id>``, ``/api/traces?service=...``), the query gRPC port. Nothing else
is opened (no internal metrics, no sampling server, no other receivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bridge.local import ports
from bridge.local.livekit_server import tools_dir
from bridge.processes import stop_process

logger = logging.getLogger(__name__)

JAEGER_VERSION = "v1.75.0"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
# The Go module pinning it (a source checkout only; not in the wheel).
TOOL_MODULE = Path(__file__).resolve().parents[2] / "config" / "tools" / "jaeger"
UI_ARCHIVE = TOOL_MODULE / "jaeger-ui-v1.75.0.tar.xz"
UI_PORT = 16686  # Jaeger's usual UI port, used by `dev` when free
START_ATTEMPTS = 5
MAX_TRACES = 10_000


class JaegerError(RuntimeError):
    pass


def cached_binary() -> Path:
    return tools_dir() / "bin" / f"jaeger-{JAEGER_VERSION}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary() -> Path | None:
    """``$JAEGER_BIN``, then ``jaeger`` on PATH, then the cached build."""
    explicit = os.environ.get("JAEGER_BIN")
    if explicit:
        if not _executable(Path(explicit)):
            raise JaegerError(f"JAEGER_BIN={explicit} is not an executable file")
        return Path(explicit)
    on_path = shutil.which("jaeger")
    if on_path:
        return Path(on_path)
    cached = cached_binary()
    return cached if _executable(cached) else None


def ensure_binary() -> Path:
    """Find jaeger, building it into the tools dir when absent (once: a file lock makes
    concurrent callers wait for one build)."""
    found = find_binary()
    if found is not None:
        return found
    target = cached_binary()
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".jaeger.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _executable(target):
            _build(target)
    return target


def _build(target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise JaegerError("jaeger is not on PATH (or $JAEGER_BIN) and Go is not installed")
    if not (TOOL_MODULE / "go.mod").is_file():
        raise JaegerError(
            f"jaeger is not on PATH (or $JAEGER_BIN) and {TOOL_MODULE} (a source checkout's "
            "config/tools/jaeger) is not there to build it from"
        )
    logger.warning("building jaeger %s with Go (once; takes several minutes)", JAEGER_VERSION)
    with tempfile.TemporaryDirectory(dir=target.parent) as out:
        built = Path(out) / "jaeger"
        proc = subprocess.run(
            [go, "build", "-trimpath", "-o", str(built), JAEGER_PACKAGE],
            cwd=TOOL_MODULE,
            # -mod=readonly: the committed go.mod/go.sum are the pin; nothing is re-resolved.
            env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
            raise JaegerError(f"building jaeger failed: {tail}")
        os.replace(built, target)


def ui_assets() -> Path | None:
    """The unpacked UI (once per archive content), or None without the archive."""
    if not UI_ARCHIVE.is_file():
        return None
    digest = hashlib.sha256(UI_ARCHIVE.read_bytes()).hexdigest()[:16]
    target = tools_dir() / f"jaeger-ui-{digest}"
    if (target / "index.html").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, tarfile.open(UI_ARCHIVE) as tar:
        tar.extractall(tmp, filter="data")
        with contextlib.suppress(OSError):  # another process unpacked it meanwhile
            os.replace(tmp, target)
            os.mkdir(tmp)  # for TemporaryDirectory's cleanup
    return target


def render_config(
    *, otlp_port: int, ui_port: int, grpc_port: int, assets: Path | None = None
) -> dict[str, Any]:
    """Jaeger v2's (OpenTelemetry Collector) config: OTLP/HTTP -> batch -> memory, the query
    extension on loopback, no internal telemetry server."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": MAX_TRACES}}}},
            "jaeger_query": {
                "storage": {"traces": "memory"},
                **({"ui": {"assets_path": str(assets)}} if assets is not None else {}),
                "http": {"endpoint": f"127.0.0.1:{ui_port}"},
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
            },
        },
        "receivers": {
            "otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}},
        },
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
    }


class JaegerQuery:
    """Jaeger's query API (the UI's JSON API) at ``ui_url``."""

    def __init__(self, ui_url: str) -> None:
        self.ui_url = ui_url if ui_url.endswith("/") else ui_url + "/"

    async def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace as the query API returns it (``data[0]``: spans, processes), or None."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.get(f"{self.ui_url}api/traces/{trace_id}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        data = answer.json().get("data") or []
        return data[0] if data else None

    async def traces(
        self, service: str, *, tags: dict[str, str] | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The service's latest traces (with a span carrying every one of ``tags``)."""
        params: dict[str, str | int] = {"service": service, "limit": limit}
        if tags:
            params["tags"] = json.dumps(tags)
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.get(f"{self.ui_url}api/traces", params=params)
        answer.raise_for_status()
        return list(answer.json().get("data") or [])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Jaeger:
    """A running Jaeger. ``async with Jaeger() as jaeger: ... jaeger.otlp_endpoint ...``

    ``ui_port`` 0 picks a free port; any other is tried first and a free one taken when it is
    busy (``dev`` asks for 16686)."""

    def __init__(self, *, ui_port: int = 0, binary: Path | None = None) -> None:
        self._want_ui = ui_port
        self._binary = binary
        self._proc: asyncio.subprocess.Process | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.otlp_port = 0
        self.ui_port = 0

    @property
    def otlp_endpoint(self) -> str:
        """For ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}/"

    def log_tail(self, lines: int = 30) -> str:
        if self._workdir is None:
            return ""
        log = Path(self._workdir.name) / "jaeger.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, timeout: float = 30.0) -> None:
        binary = self._binary
        if binary is None:
            binary = await asyncio.to_thread(ensure_binary)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                await self._start_once(binary, timeout, self._ui_port_to_try(attempt))
            except JaegerError as exc:
                if not ports.is_address_in_use(str(exc)) or attempt == START_ATTEMPTS:
                    raise
                logger.warning("jaeger lost a port race (start %d); again on fresh ports", attempt)
            else:
                return

    def _ui_port_to_try(self, attempt: int) -> int:
        wanted = self._want_ui
        if wanted and attempt == 1 and _bindable(wanted):
            return wanted
        return ports.free_port()

    async def _start_once(self, binary: Path, timeout: float, ui_port: int) -> None:
        self.otlp_port, self.ui_port = ports.free_port(), ui_port
        self._workdir = tempfile.TemporaryDirectory(prefix="jaeger-")
        workdir = Path(self._workdir.name)
        config = workdir / "jaeger.yaml"  # JSON is YAML
        config.write_text(
            json.dumps(
                render_config(
                    otlp_port=self.otlp_port,
                    ui_port=self.ui_port,
                    grpc_port=ports.free_port(),
                    assets=await asyncio.to_thread(ui_assets),
                ),
                indent=2,
            )
        )
        with (workdir / "jaeger.log").open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                str(binary),
                "--config",
                str(config),
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
        """Until the query API answers and the OTLP port accepts connections."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise JaegerError(
                        f"jaeger exited with {self._proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError, OSError):
                    answer = await client.get(f"{self.ui_url}api/services")
                    if answer.status_code == 200:
                        _, writer = await asyncio.open_connection("127.0.0.1", self.otlp_port)
                        writer.close()
                        await writer.wait_closed()
                        logger.info("jaeger ready: UI %s, OTLP %s", self.ui_url, self.otlp_endpoint)
                        return
                await asyncio.sleep(0.1)
        raise JaegerError(f"jaeger did not answer in {timeout:g} s:\n{self.log_tail()}")

    @property
    def query(self) -> JaegerQuery:
        return JaegerQuery(self.ui_url)

    async def aclose(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s). Idempotent; the traces are gone."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process(proc, timeout=5.0, group=True)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    async def __aenter__(self) -> Jaeger:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
