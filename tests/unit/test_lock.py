"""The lock files in config/requirements/ match pyproject.toml: every dependency pinned (with
hashes) at a version its range allows, the image's and the build backend's pins the same as the
dev lock's.

When this fails after a change to pyproject.toml: run ``make lock`` and commit
config/requirements/."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "config" / "requirements"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
FIX = "run `make lock` and commit config/requirements/"


def pins(name: str) -> dict[str, set[str]]:
    """``{package: {versions}}`` of one lock file (a universal lock may pin a package twice, under
    different markers); every pin carries at least one sha256."""
    found: dict[str, set[str]] = {}
    lines = (LOCKS / name).read_text().splitlines()
    for i, line in enumerate(lines):
        match = PIN.match(line)
        if match is None:
            continue
        assert i + 1 < len(lines) and "--hash=sha256:" in lines[i + 1], f"{name}: {line} no hash"
        found.setdefault(canonicalize_name(match[1]), set()).add(match[2])
    assert found, f"config/requirements/{name} pins nothing"
    return found


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def requirements(*extras: str) -> list[Requirement]:
    proj = project()["project"]
    assert isinstance(proj, dict)
    texts = list(proj["dependencies"])
    for extra in extras:
        texts += proj["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def applies(req: Requirement) -> bool:
    """Markers evaluated for Linux, CPython 3.11 (the image and CI)."""
    if req.marker is None:
        return True
    env = {**default_environment(), "python_version": "3.11", "sys_platform": "linux"}
    return req.marker.evaluate({k: str(v) for k, v in env.items()})


def check(reqs: list[Requirement], lock: str) -> None:
    pinned = pins(lock)
    for req in reqs:
        if not applies(req):
            continue
        versions = pinned.get(canonicalize_name(req.name))
        assert versions, f"{req} is not in config/requirements/{lock}: {FIX}"
        assert any(req.specifier.contains(v, prereleases=True) for v in versions), (
            f"config/requirements/{lock} pins {req.name} {sorted(versions)}, outside {req}: {FIX}"
        )


def test_dev_lock_covers_runtime_emulator_and_dev_tools() -> None:
    check(requirements("emulator", "dev"), "dev.txt")


def test_image_lock_covers_runtime_and_emulator() -> None:
    check(requirements("emulator"), "runtime.txt")


def test_build_lock_covers_the_build_backend() -> None:
    build = project()["build-system"]
    assert isinstance(build, dict)
    reqs = [Requirement(text) for text in build["requires"]]
    check(reqs, "build.txt")
    check(reqs, "dev.txt")  # `make test` builds without isolation from the dev virtualenv


@pytest.mark.parametrize("lock", ["runtime.txt", "build.txt"])
def test_locks_agree_with_the_dev_lock(lock: str) -> None:
    dev = pins("dev.txt")
    for name, versions in pins(lock).items():
        assert versions <= dev.get(name, set()), f"{name} {versions} in {lock}, not in dev: {FIX}"


def test_the_image_carries_no_dev_tool() -> None:
    runtime = pins("runtime.txt")
    for tool in ("pytest", "mypy", "ruff", "hypothesis"):
        assert tool not in runtime


def test_the_benchmarks_peer_is_locked_apart() -> None:
    """config/requirements/peer.txt (``make lock``): livekit-agents and its OpenAI plugin at the
    versions tests/bench/peer_bench.py compares with, hashed; it pins a livekit of its own, which
    is why it lives in .venv-peer/ and nothing in bridge/ imports it."""
    peer = pins("peer.txt")
    assert peer["livekit-agents"] == {"1.8.9"}, FIX
    assert peer["livekit-plugins-openai"] == {"1.8.9"}, FIX
    assert peer["livekit"] != pins("dev.txt")["livekit"]
    wanted = (LOCKS / "peer.in").read_text()
    assert "livekit-agents==1.8.9" in wanted and "livekit-plugins-openai==1.8.9" in wanted
