"""The README's screenshot of one turn's trace in Jaeger's UI (tests/screenshots/trace.png).

``trace.png.sources`` holds the digest of what it shows (bridge/tracing/ and the Jaeger UI
archive) when it was taken: the trace test retakes it when they differ, and a unit test fails a
commit that changed them without the retaken screenshot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *sorted((ROOT / "bridge" / "tracing").glob("*.py")),
    ROOT / "config" / "tools" / "jaeger" / "jaeger-ui-v1.75.0.tar.xz",
]
SCREENSHOT = ROOT / "tests" / "screenshots" / "trace.png"
SCREENSHOT_SOURCES = ROOT / "tests" / "screenshots" / "trace.png.sources"


def trace_digest() -> str:
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def screenshot_is_current() -> bool:
    return (
        SCREENSHOT.exists()
        and SCREENSHOT_SOURCES.exists()
        and SCREENSHOT_SOURCES.read_text().strip() == trace_digest()
    )
