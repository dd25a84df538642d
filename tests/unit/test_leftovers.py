"""The end-of-session check (tests/conftest.py) finds what a test started and left running: an
orphan re-parented away from us (by its mark), and a child started with an environment of its own
(below us)."""

from __future__ import annotations

import os
import subprocess

from tests.support import processes


def test_an_orphan_that_kept_our_mark_is_found_and_named() -> None:
    mark = os.environ[processes.SESSION_MARK]
    # The shell exits at once; its background sleep is nobody's child of ours any more.
    started = subprocess.run(
        ["sh", "-c", "sleep 37 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(started.stdout)
    try:
        found = {p.pid: p for p in processes.leftovers(mark)}
        assert orphan in found
        assert found[orphan].command == "sleep 37"
        assert str(found[orphan]) == f"pid {orphan}: sleep 37"
    finally:
        processes.kill([processes.Proc(orphan, "sleep")])
    assert processes.wait_gone([processes.Proc(orphan, "sleep")], 5) == []


def test_a_child_without_our_environment_is_found_below_us() -> None:
    child = subprocess.Popen(["sleep", "38"], env={"PATH": os.environ["PATH"]})
    try:
        assert child.pid not in {p.pid for p in processes.marked(processes.SESSION_MARK, "x")}
        found = {p.pid: p for p in processes.leftovers(os.environ[processes.SESSION_MARK])}
        assert found[child.pid].command == "sleep 38"
    finally:
        child.kill()
        child.wait()
    assert child.pid not in {p.pid for p in processes.descendants(os.getpid())}
