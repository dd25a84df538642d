"""The page's files: the committed bundle matches its sources, and ships as package data."""

from __future__ import annotations

import hashlib
import re
import tomllib
from importlib import resources
from pathlib import Path

from tests.support.page_files import screenshot_is_current

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "bridge" / "local" / "page_src"


def sources_digest() -> str:
    """What bridge/local/page_src/build.mjs writes into the bundle's banner."""
    names = [f"src/{p.name}" for p in sorted((WEB / "src").glob("*.js"))] + ["package-lock.json"]
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (WEB / name).read_bytes() + b"\0")
    return digest.hexdigest()


def test_the_committed_bundle_is_built_from_the_current_sources() -> None:
    bundle = resources.files("bridge.local").joinpath("page", "page.js").read_text()
    found = re.search(r"^// sources-sha256: ([0-9a-f]{64})$", bundle, re.MULTILINE)
    assert found, "page.js has no sources digest: rebuild it with `make page`"
    assert found.group(1) == sources_digest(), (
        "bridge/local/page_src/ changed: rebuild the bundle with `make page`"
    )


def test_the_bundle_pins_the_locked_livekit_client() -> None:
    lock = (WEB / "package-lock.json").read_text()
    version = re.search(r'"node_modules/livekit-client": \{\s*"version": "([^"]+)"', lock)
    assert version
    bundle = resources.files("bridge.local").joinpath("page", "page.js").read_text()
    assert f"(livekit-client {version.group(1)})" in bundle.splitlines()[0]


def test_the_page_ships_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "local/page/*" in config["tool"]["setuptools"]["package-data"]["bridge"]
    page = resources.files("bridge.local").joinpath("page")
    html = page.joinpath("index.html").read_text()
    for asset in re.findall(r'(?:src|href)="([^":]+)"', html):
        assert page.joinpath(asset).is_file(), asset


def test_the_readme_screenshot_was_taken_of_the_current_page() -> None:
    assert screenshot_is_current(), (
        "bridge/local/page/ changed since tests/screenshots/page.png was taken: run "
        "`python -m pytest tests/integration/test_page.py -k chromium` (it retakes it) and "
        "commit tests/screenshots/page.png and page.png.sources"
    )
