"""The page's served files and the README screenshot taken of them (tests/screenshots/).

``page.png.sources`` holds the digest of ``bridge/local/page/`` when the screenshot was taken:
the browser test retakes it when they differ, and a unit test fails a commit that changed the
page without the retaken screenshot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE_DIR = ROOT / "bridge" / "local" / "page"
SCREENSHOT = ROOT / "tests" / "screenshots" / "page.png"
SCREENSHOT_SOURCES = ROOT / "tests" / "screenshots" / "page.png.sources"


def page_digest() -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in PAGE_DIR.iterdir()):
        digest.update(name.encode() + b"\0" + (PAGE_DIR / name).read_bytes())
    return digest.hexdigest()


def screenshot_is_current() -> bool:
    return (
        SCREENSHOT.exists()
        and SCREENSHOT_SOURCES.exists()
        and SCREENSHOT_SOURCES.read_text().strip() == page_digest()
    )
