"""The README's screenshot of a trace in Jaeger's UI is retaken when what it shows changed."""

from __future__ import annotations

from tests.support.trace_screenshot import SCREENSHOT, screenshot_is_current


def test_the_trace_screenshot_shows_the_current_spans_and_ui() -> None:
    assert screenshot_is_current(), (
        "bridge/tracing/ or Jaeger's UI changed since tests/screenshots/trace.png was taken: run "
        "`.venv/bin/python -m pytest tests/integration/test_traces.py` and commit "
        f"{SCREENSHOT.name} and {SCREENSHOT.name}.sources"
    )
