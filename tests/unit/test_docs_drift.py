"""The docs cannot drift from the code.

Every ``room-bridge`` subcommand and option, ``BRIDGE_*`` setting, ``bridge_*`` metric, ``make``
target and repository path (``bridge/...``, ``tests/...``) that README.md, CONTRIBUTING.md or the
docs site (docs/, and k8s/README.md, which the site includes) names exists: read from the CLI's
argparse parser, the settings model, the Prometheus registry, the Makefile and the tree. And
every setting and every metric is documented somewhere in the site.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import bridge.metrics  # noqa: F401  (registers the collectors)
from bridge.cli import _parser
from bridge.settings.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
SITE = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "k8s" / "README.md"]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *SITE]

# Names the docs write on purpose that are not ours: a misspelt variable in an example of the
# error it gets, and a benchmark's JSON field.
NOT_SETTINGS = {"BRIDGE_MODLE"}
NOT_METRICS = {"bridge_added_ms"}
GLOBAL_OPTIONS = {"--config", "--log-level", "--log-format", "--help", "-h"}


def _text(page: Path) -> str:
    return page.read_text()


def code_of(text: str) -> list[str]:
    """The text's code: each line of a fenced block, and each inline code span."""
    code: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            code.append(line)
        else:
            code.extend(re.findall(r"`([^`]+)`", line))
    return code


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ---- what exists --------------------------------------------------------------------------------


def cli_options() -> dict[str, set[str]]:
    """``{"serve": {"--host", ...}, ...}`` with every subcommand's options, and ``""`` for the
    top level."""
    parser = _parser()
    found: dict[str, set[str]] = {"": set()}
    for action in parser._actions:
        found[""].update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = {opt for a in sub._actions for opt in a.option_strings}
    return found


def metric_names() -> set[str]:
    """Every ``bridge_*`` series name the process exposes (counters with ``_total``)."""
    names: set[str] = set()
    for metric in REGISTRY.collect():
        if not metric.name.startswith("bridge_"):
            continue
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
        elif metric.type == "histogram":
            names.update(metric.name + s for s in ("", "_bucket", "_count", "_sum"))
        else:
            names.add(metric.name)
    return names


def documented_metrics() -> set[str]:
    """The metrics the docs must name: counters with ``_total``, the rest by their name."""
    return {n for n in metric_names() if not n.endswith(("_bucket", "_count", "_sum"))}


def make_targets() -> set[str]:
    """The Makefile's targets, ``$(VAR)`` expanded from its own assignments."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z_]+)\s*[:?]?=\s*(\S*)\s*$", text, re.MULTILINE))

    def expand(name: str) -> str:
        for _ in range(5):
            name = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), name)
        return name

    targets: set[str] = set()
    for match in re.finditer(r"^([^\s:#=][^:=]*?):(?!=)", text, re.MULTILINE):
        for target in match.group(1).split():
            if not target.startswith("."):
                targets.add(expand(target))
            elif "/" in target:
                targets.add(target)
    return targets


# ---- what the docs name -------------------------------------------------------------------------

# The command, then a subcommand or an option (``deploy/room-bridge 8080`` is not ours).
COMMAND = re.compile(
    r"(?:^|[\s/])(?:room-bridge|python -m bridge)"
    r"((?:\s+(?:[a-z]+|--?[a-z])[^\s#|]*)(?:\s+[^\s#|]+)*)"
)
MAKE = re.compile(r"(?:^|[\s;&(])make\s+([A-Za-z.][\w./-]*)")


def named_commands(code: str) -> list[tuple[str, list[str]]]:
    """``room-bridge serve --host H [--port P]`` -> ``[("serve", ["--host", "--port"])]``."""
    found = []
    for match in COMMAND.finditer(code):
        words = [w.strip("[]()") for w in match.group(1).split()]
        if not words:
            continue
        command = "" if words[0].startswith("-") else words[0]
        options = [w.split("=")[0] for w in words if w.startswith("-")]
        found.append((command, options))
    return found


def test_the_code_finders_see_what_the_docs_write() -> None:
    code = code_of(
        "Run `room-bridge serve [--host H] [--port P]` or\n"
        "```sh\nBRIDGE_AUDIENCE=private .venv/bin/room-bridge dev --no-human   # you --talk\n"
        "make lock LOCK_ARGS=--upgrade\n```\n"
        "identity `room-bridge-<room>`; `make demo`; to make sure; `deploy/room-bridge 8080`"
    )
    commands = [c for line in code for c in named_commands(line)]
    assert commands == [("serve", ["--host", "--port"]), ("dev", ["--no-human"])]
    assert [m for line in code for m in MAKE.findall(line)] == ["lock", "demo"]
    assert {"demo", "test", "docs", "lock", ".venv/.installed-stamp"} <= make_targets()
    assert {"bridge_calls_started_total", "bridge_call_setup_seconds"} <= metric_names()


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_command_and_option_named_exists(page: Path) -> None:
    options = cli_options()
    wrong: list[str] = []
    for line in code_of(_text(page)):
        for command, used in named_commands(line):
            if command not in options:
                wrong.append(f"room-bridge {command}: no such subcommand ({line!r})")
                continue
            known = options[command] | GLOBAL_OPTIONS | ({"--version"} if not command else set())
            wrong.extend(
                f"room-bridge {command} {option}: no such option ({line!r})"
                for option in used
                if option not in known
            )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_setting_named_exists(page: Path) -> None:
    settings = {env_name(name) for name in Settings.model_fields}
    named = set(re.findall(r"\bBRIDGE_[A-Z0-9_]*[A-Z0-9]\b", _text(page)))
    unknown = sorted(named - settings - NOT_SETTINGS)
    assert not unknown, f"{_rel(page)} names settings that do not exist: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_metric_named_exists(page: Path) -> None:
    named = set(re.findall(r"\bbridge_[a-z0-9_]*[a-z0-9]\b(?!\.py)", _text(page)))
    unknown = sorted(named - metric_names() - NOT_METRICS)
    assert not unknown, f"{_rel(page)} names metrics that do not exist: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_make_target_named_exists(page: Path) -> None:
    targets = make_targets()
    named = {t for line in code_of(_text(page)) for t in MAKE.findall(line)}
    unknown = sorted(named - targets)
    assert not unknown, f"{_rel(page)} names make targets that do not exist: {unknown}"


def test_every_setting_and_metric_is_documented_in_the_site() -> None:
    site = "\n".join(_text(page) for page in SITE)
    missing = [env_name(n) for n in Settings.model_fields if f"`{env_name(n)}`" not in site]
    missing += sorted(m for m in documented_metrics() if m not in site)
    assert not missing, f"not documented in docs/: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_repository_path_named_exists(page: Path) -> None:
    named = set(
        re.findall(r"(?<![\w/.-])((?:bridge|tests|config|k8s|docs)/[\w/.\-]*[\w/])", _text(page))
    )
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"{_rel(page)} names files that do not exist: {missing}"


# What a lab notebook says and the user's docs do not: history goes to CHANGELOG.md.
NARRATION = re.compile(
    r"load average|\ba first run\b|still owed|\bearlier (?:runs?|attempts?)\b|\bwe ran\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("page", [ROOT / "README.md", *SITE], ids=_rel)
def test_the_docs_hold_current_figures_not_history(page: Path) -> None:
    found = sorted({m.group(0) for m in NARRATION.finditer(_text(page))})
    assert not found, f"{_rel(page)} narrates runs ({found}): move that to CHANGELOG.md"
