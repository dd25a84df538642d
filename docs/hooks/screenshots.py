"""MkDocs hook: the screenshots the browser tests take (tests/screenshots/*.png) are served as
images/<name>.png, so the site shows the current picture without a second copy in docs/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

SCREENSHOTS = Path(__file__).resolve().parents[2] / "tests" / "screenshots"


def on_files(files: Files, config: Any) -> Files:
    for picture in sorted(SCREENSHOTS.glob("*.png")):
        files.append(
            File.generated(config, f"images/{picture.name}", abs_src_path=str(picture))
        )
    return files
