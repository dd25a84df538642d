"""The package layout's import rules (see each subpackage's ``__init__`` docstring).

Every ``import`` in ``bridge/`` is read from the source, including the lazy ones inside
functions, so a rule cannot be broken by importing late.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bridge"
SIDES = ("room", "service", "local", "realtime", "emulator", "settings", "billing", "tracing")
# The entry points wire the sides together: they may import every side, and no side (nor the
# plumbing) may import them, or a room module could reach the service through ``bridge.commands``.
ENTRY_POINTS = {"cli", "commands", "__main__"}
# Who may import which side of the package; "plumbing" is a module at bridge's top level. The
# sides are layers, each importing only those below it: plumbing <- billing <- settings <-
# tracing <- realtime <- emulator, room <- service <- local <- entry points. No exceptions (the
# emulator, a stand-in for the model, makes no spans).
ALLOWED: dict[str, set[str]] = {
    "plumbing": {"plumbing"},
    "billing": {"billing", "plumbing"},
    "settings": {"settings", "billing", "plumbing"},
    "tracing": {"tracing", "settings", "billing", "plumbing"},
    "realtime": {"realtime", "tracing", "settings", "billing", "plumbing"},
    "emulator": {"emulator", "realtime", "settings", "billing", "plumbing"},
    "room": {"room", "realtime", "tracing", "settings", "billing", "plumbing"},
    "service": {"service", "room", "realtime", "tracing", "settings", "billing", "plumbing"},
    "local": {
        "local",
        "service",
        "room",
        "realtime",
        "emulator",
        "tracing",
        "settings",
        "billing",
        "plumbing",
    },
    "entry": {"entry", *SIDES, "plumbing"},
}
# LiveKit types stay on the room side of the bridge (and in the local stack and service).
NO_LIVEKIT = {"realtime", "emulator", "tracing", "settings", "billing", "plumbing"}


def side_of(module: str) -> str | None:
    """``bridge.room.session`` -> ``room``; ``bridge.settings.config`` -> ``plumbing``;
    ``bridge.commands`` -> ``entry``."""
    parts = module.split(".")
    if parts[0] != "bridge":
        return None
    if len(parts) == 1:
        return "plumbing"
    if parts[1] in ENTRY_POINTS:
        return "entry"
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


def violations(module: str, path: Path) -> list[str]:
    """What ``module`` (its source at ``path``) imports against the rules, one line each."""
    own = side_of(module)
    assert own is not None, f"{module} is not in the bridge package"
    broken = []
    for line, name in imports_of(path):
        target = side_of(name)
        if target is not None and target not in ALLOWED[own]:
            broken.append(f"{path.name}:{line} imports {name} ({own} may not import {target})")
        if own in NO_LIVEKIT and name.split(".")[0] == "livekit":
            broken.append(f"{path.name}:{line} imports {name} (LiveKit stays out of {own})")
    return broken


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_follow_the_layout(module: str, path: Path) -> None:
    broken = violations(module, path)
    assert not broken, "\n".join(broken)


def test_the_top_level_holds_at_most_ten_modules() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 10, f"bridge/ has {len(top)} modules at its top level: {top}"


def test_every_side_is_a_documented_package() -> None:
    for side in SIDES:
        init = PACKAGE / side / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"bridge/{side}/__init__.py needs a docstring saying what lives there"


def test_the_rule_checker_sees_lazy_and_package_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from bridge import logs\n"
        "def f() -> None:\n"
        "    from bridge.service.server import BridgeServer\n"
        "    import livekit.rtc\n"
    )
    names = [name for _, name in imports_of(source)]
    assert names == ["bridge.logs", "bridge.service.server", "livekit.rtc"]
    assert [side_of(n) for n in names] == ["plumbing", "service", None]


def test_the_rule_checker_flags_a_room_module_importing_the_service(tmp_path: Path) -> None:
    source = tmp_path / "leak.py"
    source.write_text(
        "from __future__ import annotations\n"
        "from bridge.settings.config import Settings\n"
        "from bridge.realtime.call import RealtimeCall\n"
        "def f() -> None:\n"
        "    from bridge.service.server import BridgeServer\n"
    )
    assert violations("bridge.room.leak", source) == [
        "leak.py:5 imports bridge.service.server (room may not import service)"
    ]
    # The same source is fine where the service may import it.
    assert violations("bridge.local.leak", source) == []


@pytest.mark.parametrize("entry", ["bridge.commands", "bridge.cli", "bridge.__main__"])
@pytest.mark.parametrize("side", [*SIDES, "plumbing"])
def test_no_side_may_import_the_entry_points(tmp_path: Path, side: str, entry: str) -> None:
    source = tmp_path / "m.py"
    source.write_text(f"import {entry}\n")
    module = "bridge.m" if side == "plumbing" else f"bridge.{side}.m"
    assert violations(module, source) == [f"m.py:1 imports {entry} ({side} may not import entry)"]


def module_table() -> dict[str, set[str]]:
    """CONTRIBUTING.md's module table: ``{"bridge/room/": {"worker.py", "tools/", ...}}``,
    every name written in backticks in that folder's row, split at slashes."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    start = text.index("| folder / module | role |")
    rows: dict[str, set[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        folder, role = line.strip("|").split("|", maxsplit=1)
        names: set[str] = set()
        for span in re.findall(r"`([^`]+)`", role):
            names.update(part for part in re.split(r"[/ ]", span) if part)
            names.update(re.findall(r"[\w.]+/", span))
        rows[folder.strip().strip("`")] = names
    return rows


def test_the_module_table_names_every_module() -> None:
    rows = module_table()
    missing: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        row = "bridge/*.py" if len(rel.parts) == 1 else f"bridge/{rel.parts[0]}/"
        # A nested package (room/tools/) is named as ``tools/`` and each of its modules by name.
        wanted = [f"{part}/" for part in rel.parts[1:-1]]
        if rel.name != "__init__.py":
            wanted.append(rel.name)
        missing.extend(f"{row} lacks {name} ({rel})" for name in wanted if name not in rows[row])
    # Folders of package data (local/page/, local/page_src/) too.
    for side in SIDES:
        for folder in sorted((PACKAGE / side).iterdir()):
            name = f"{folder.name}/"
            hidden = folder.name.startswith(("_", ".")) or folder.name == "node_modules"
            if folder.is_dir() and not hidden and name not in rows[f"bridge/{side}/"]:
                missing.append(f"bridge/{side}/ lacks {name}")
    assert not missing, "CONTRIBUTING.md's module table (## Layout and import rules):\n" + (
        "\n".join(missing)
    )


# How long a class or a function may be (its lines, decorators excluded), so that each can be
# read in one sitting. ``Settings`` is its field declarations, one per setting.
MAX_CLASS_LINES = 350
MAX_FUNCTION_LINES = 80
LONG_CLASSES_ALLOWED = {"Settings"}


def too_long(path: Path) -> list[str]:
    """Each class over ``MAX_CLASS_LINES`` and each function or method over
    ``MAX_FUNCTION_LINES`` in the source at ``path``, one line each."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            if node.name in LONG_CLASSES_ALLOWED:
                continue
            kind, limit = "class", MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind, limit = "function", MAX_FUNCTION_LINES
        else:
            continue
        lines = (node.end_lineno or node.lineno) - node.lineno + 1
        if lines > limit:
            found.append(f"{where}:{node.lineno} {kind} {node.name} is {lines} lines (max {limit})")
    return found


def test_no_class_or_function_is_too_long() -> None:
    found = [line for _, path in modules() for line in too_long(path)]
    assert not found, "\n".join(found)


def test_the_length_checker_names_long_classes_and_functions(tmp_path: Path) -> None:
    def block(header: str, indent: str, body_lines: int) -> str:
        return header + "".join(f"{indent}v{i} = {i}\n" for i in range(body_lines))

    parts = [
        block("class Big:\n", "    ", MAX_CLASS_LINES),  # one line too long
        block("class Settings:\n", "    ", MAX_CLASS_LINES),  # allowed by name
        block("def fits():\n", "    ", MAX_FUNCTION_LINES - 1),  # just fits
        block("@decorated\nasync def long():\n", "    ", MAX_FUNCTION_LINES),
        block("class Small:\n    def method(self):\n", "        ", MAX_FUNCTION_LINES + 1),
    ]
    starts = [1]
    for part in parts:
        starts.append(starts[-1] + part.count("\n"))
    source = tmp_path / "m.py"
    source.write_text("".join(parts))
    most = MAX_FUNCTION_LINES
    assert too_long(source) == [
        f"m.py:1 class Big is {MAX_CLASS_LINES + 1} lines (max {MAX_CLASS_LINES})",
        f"m.py:{starts[3] + 1} function long is {most + 1} lines (max {most})",
        f"m.py:{starts[4] + 1} function method is {most + 2} lines (max {most})",
    ]


def test_the_module_table_names_no_module_that_is_gone() -> None:
    """The other way round: every ``*.py`` a row names is a module of that folder (or of a
    package inside it), so a moved or deleted module leaves no stale line."""
    stale: list[str] = []
    for row, names in module_table().items():
        folder = PACKAGE if row == "bridge/*.py" else ROOT / row
        if not folder.is_dir():
            stale.append(f"{row}: no such folder")
            continue
        present = {
            p.name for p in (folder.glob("*.py") if row == "bridge/*.py" else folder.rglob("*.py"))
        }
        stale.extend(
            f"{row} names {name}, which is not there"
            for name in sorted(names)
            if name.endswith(".py") and name not in present
        )
    assert not stale, "CONTRIBUTING.md's module table (## Layout and import rules):\n" + (
        "\n".join(stale)
    )
