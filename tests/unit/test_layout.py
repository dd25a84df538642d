"""The package layout's import rules (see each subpackage's ``__init__`` docstring).

Every ``import`` in ``bridge/`` is read from the source, including the lazy ones inside
functions, so a rule cannot be broken by importing late.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bridge"
SIDES = ("room", "service", "local", "realtime", "emulator")
# Who may import which side of the package; "plumbing" is a module at bridge's top level.
ALLOWED: dict[str, set[str]] = {
    "realtime": {"realtime", "plumbing"},
    "emulator": {"emulator", "realtime", "plumbing"},
    "room": {"room", "realtime", "plumbing"},
    "service": {"service", "room", "realtime", "plumbing"},
    "local": {"local", "service", "room", "realtime", "emulator", "plumbing"},
    "plumbing": {"plumbing", "realtime"},
}
# The CLI wires the sides together and may import all of them.
ENTRY_POINTS = {"cli", "commands", "__main__"}
# LiveKit types stay on the room side of the bridge (and in the local stack and service).
NO_LIVEKIT = {"realtime", "emulator"}


def side_of(module: str) -> str | None:
    """``bridge.room.session`` -> ``room``; ``bridge.config`` -> ``plumbing``."""
    parts = module.split(".")
    if parts[0] != "bridge":
        return None
    if len(parts) == 1:
        return "plumbing"
    return parts[1] if parts[1] in SIDES else "plumbing"


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(
                (node.lineno, f"{node.module}.{alias.name}")
                if node.module == "bridge"
                else (node.lineno, node.module)
                for alias in node.names
            )
    return found


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        found.append((".".join(rel.parts), path))
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_follow_the_layout(module: str, path: Path) -> None:
    own = side_of(module)
    assert own is not None
    if own == "plumbing" and module.rsplit(".", maxsplit=1)[-1] in ENTRY_POINTS:
        return
    broken = []
    for line, name in imports_of(path):
        target = side_of(name)
        if target is not None and target not in ALLOWED[own]:
            broken.append(f"{path.name}:{line} imports {name} ({own} may not import {target})")
        if own in NO_LIVEKIT and name.split(".")[0] == "livekit":
            broken.append(f"{path.name}:{line} imports {name} (LiveKit stays out of {own})")
    assert not broken, "\n".join(broken)


def test_every_side_is_a_documented_package() -> None:
    for side in SIDES:
        init = PACKAGE / side / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"bridge/{side}/__init__.py needs a docstring saying what lives there"


def test_the_rule_checker_sees_lazy_and_package_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from bridge import config\n"
        "def f() -> None:\n"
        "    from bridge.service.server import BridgeServer\n"
        "    import livekit.rtc\n"
    )
    names = [name for _, name in imports_of(source)]
    assert names == ["bridge.config", "bridge.service.server", "livekit.rtc"]
    assert [side_of(n) for n in names] == ["plumbing", "service", None]
