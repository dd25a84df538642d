"""The model table against the openai package's own model lists, and what reads it: prices,
the start-up warning and ``/status``."""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path
from typing import Any, get_args

import pytest
from openai.types.realtime import (
    AudioTranscriptionParam,
    RealtimeSessionCreateRequest,
    audio_transcription_param,
    realtime_session_create_request,
)

from bridge.billing.cost import Pricer, Spend
from bridge.billing.models import (
    DEFAULT_MODEL,
    MODELS,
    deprecation_warning,
    describe,
    input_limit,
    model_info,
    reasoning_models,
    takes_reasoning,
)
from bridge.billing.prices import DEFAULT_PRICES, PRICES_READ, SOURCES, price_of
from bridge.cli import warn_deprecated
from bridge.settings.config import Settings
from bridge.settings.doc import render_models

TODAY = date(2026, 12, 3)


def listed(annotation: Any) -> set[str]:
    """The string literals of a ``Union[str, Literal[...]]`` annotation."""
    names: set[str] = set()
    for arg in get_args(annotation):
        names |= {a for a in get_args(arg) if isinstance(a, str)}
    return names


def deprecated_in(doc: str) -> tuple[set[str], date]:
    """The names and the shutdown date of the docstring's "Deprecated values" paragraph."""
    text = " ".join(doc.split("Deprecated values:", 1)[1].split())
    found = re.search(r"Announced shutdown date: (\d{4}-\d{2}-\d{2})", text)
    assert found is not None
    return set(re.findall(r'"([^"]+)"', text.split("Announced")[0])), date.fromisoformat(
        found.group(1)
    )


SESSION_MODEL = RealtimeSessionCreateRequest.model_fields["model"]
TRANSCRIPTION_MODEL = AudioTranscriptionParam.__annotations__["model"]


def model_doc(module: Any) -> str:
    """The docstring of a types module's ``model`` field (pydantic keeps none of it)."""
    assert module.__file__ is not None
    with open(module.__file__) as fh:
        return fh.read().split("model: Union[", 1)[1]


def test_every_realtime_model_openai_lists_is_in_the_table() -> None:
    names = listed(SESSION_MODEL.annotation)
    assert {"gpt-realtime-2.1", "gpt-realtime", "gpt-realtime-1.5"} <= names
    assert sorted(n for n in names if model_info(n) is None) == []
    assert all(model_info(n).kind == "realtime" for n in names)  # type: ignore[union-attr]


def test_deprecations_match_the_openai_types() -> None:
    names, shutdown = deprecated_in(model_doc(realtime_session_create_request))
    assert shutdown == date(2027, 1, 20)
    assert names == {
        "gpt-realtime",
        "gpt-realtime-2025-08-28",
        "gpt-realtime-mini",
        "gpt-realtime-mini-2025-12-15",
        "gpt-audio-mini",
        "gpt-audio-mini-2025-12-15",
    }
    for name in names:
        info = model_info(name)
        assert info is not None and info.shutdown == shutdown, name
        assert info.status(TODAY) == "deprecated"
    # Listed and not deprecated: current (the shut down previews aside).
    for name in listed(SESSION_MODEL.annotation) - names:
        assert model_info(name).shutdown is None, name  # type: ignore[union-attr]


def test_transcription_models_and_their_deprecation_match_the_openai_types() -> None:
    names, shutdown = deprecated_in(model_doc(audio_transcription_param))
    assert shutdown == date(2027, 2, 26)
    assert "gpt-4o-mini-transcribe" in names and "whisper-1" in names
    for name in names:
        info = model_info(name)
        assert info is not None and info.kind == "transcription" and info.shutdown == shutdown
    for name in listed(TRANSCRIPTION_MODEL):
        info = model_info(name)
        assert info is not None and info.kind == "transcription", name
        assert (info.shutdown is not None) == (name in names), name


def test_the_default_is_the_newest_full_reasoning_model() -> None:
    info = model_info(DEFAULT_MODEL)
    assert info is not None and DEFAULT_MODEL == "gpt-realtime-2.1" == Settings().model
    assert info.status(TODAY) == "current" and info.reasoning
    assert (info.context_window, info.max_output_tokens) == (128_000, 32_000)
    assert reasoning_models() == ["gpt-realtime-2.1", "gpt-realtime-2.1-mini", "gpt-realtime-2"]
    assert takes_reasoning("gpt-realtime-1.5") is False
    assert takes_reasoning("my-azure-deployment") is None  # unknown: nothing assumed


def test_snapshots_fall_back_to_their_family_unless_listed_apart() -> None:
    dated = model_info("gpt-realtime-2025-08-28")
    assert dated is not None and dated.name == "gpt-realtime-2025-08-28"
    assert dated.price == "gpt-realtime" and dated.shutdown == date(2027, 1, 20)
    # openai 3.57 lists this snapshot without a deprecation, unlike its alias.
    october = model_info("gpt-realtime-mini-2025-10-06")
    assert october is not None and october.shutdown is None
    assert model_info("gpt-realtime-mini-2025-12-15").shutdown is not None  # type: ignore[union-attr]
    assert model_info("my-azure-deployment") is None


def test_input_limit_per_model() -> None:
    # The session docstring: a 32k model with 4,096 max output holds 28,224 tokens.
    assert input_limit("gpt-realtime") == 28_224
    assert input_limit("gpt-realtime-1.5", 1_000) == 31_320
    assert input_limit("gpt-realtime-2.1") == 128_000 - 448 - 32_000
    assert input_limit("gpt-realtime-2.1", 4_096) == 128_000 - 448 - 4_096
    assert input_limit("my-azure-deployment") == 28_224  # the smallest window in use


def test_every_price_row_has_its_source_and_read_date() -> None:
    assert set(SOURCES) == set(DEFAULT_PRICES)
    for model, (source, read) in SOURCES.items():
        assert source.startswith("https://"), model
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", read), model
        assert read <= PRICES_READ
    # Every model with a price row in the table has that row; none is priced zero.
    for info in MODELS.values():
        if info.price is not None:
            assert info.price in DEFAULT_PRICES, info.name
    for kinds in DEFAULT_PRICES.values():
        assert all(v > 0 for v in kinds.values())


def test_current_models_are_priced_and_unknown_stays_unknown() -> None:
    table = Settings().prices
    for name in ("gpt-realtime-2.1", "gpt-realtime-2.1-mini", "gpt-realtime-2", "gpt-realtime-1.5"):
        price = price_of(table, name)
        assert price is not None and price.audio_in and price.audio_out and price.text_out, name
    assert price_of(table, "gpt-realtime-2.1").text_out == 24.0  # type: ignore[union-attr]
    assert price_of(table, "gpt-realtime-2.1-mini").audio_in == 10.0  # type: ignore[union-attr]
    # Models billed by the minute.
    assert price_of(table, "gpt-transcribe").per_minute == 0.0045  # type: ignore[union-attr]
    assert price_of(table, "gpt-realtime-whisper").per_minute == 0.017  # type: ignore[union-attr]
    # An operator's own row for a dated snapshot wins over its family's.
    mine = Settings.model_validate({"prices": {"gpt-realtime-2025-08-28": {"audio_in": 1}}})
    assert price_of(mine.prices, "gpt-realtime-2025-08-28").audio_in == 1  # type: ignore[union-attr]
    # gpt-audio-1.5 is listed but has no price row: its cost is unknown, never zero.
    spend = Spend()
    Pricer(table, "gpt-audio-1.5", "").response(
        {"input_token_details": {"audio_tokens": 10}, "output_token_details": {}}, spend
    )
    assert spend.cost_usd is None


def test_a_transcription_model_billed_by_the_minute() -> None:
    spend = Spend()
    pricer = Pricer(Settings().prices, DEFAULT_MODEL, "gpt-transcribe")
    assert pricer.transcription_priced
    usd = pricer.transcription({"type": "duration", "seconds": 90}, spend)
    assert usd == pytest.approx(1.5 * 0.0045)
    assert spend.cost_usd == pytest.approx(1.5 * 0.0045)


def test_deprecation_warning_before_and_after_the_shutdown() -> None:
    assert deprecation_warning("model", DEFAULT_MODEL, TODAY) is None
    assert deprecation_warning("model", "my-azure-deployment", TODAY) is None
    before = deprecation_warning("model", "gpt-realtime", TODAY)
    assert before == (
        "model 'gpt-realtime' is deprecated: OpenAI shuts it down on 2027-01-20 (in 48 days); "
        "use 'gpt-realtime-2.1'"
    )
    after = deprecation_warning("model", "gpt-realtime-mini", date(2027, 1, 20))
    assert after == (
        "model 'gpt-realtime-mini' was shut down by OpenAI on 2027-01-20 (past); "
        "use 'gpt-realtime-2.1-mini'"
    )
    gone = deprecation_warning("model", "gpt-4o-realtime-preview-2024-12-17", TODAY)
    assert gone == (
        "model 'gpt-4o-realtime-preview-2024-12-17' is shut down by OpenAI; use 'gpt-realtime-2.1'"
    )


def test_status_describes_each_model() -> None:
    assert describe("gpt-realtime", TODAY) == {
        "name": "gpt-realtime",
        "status": "deprecated",
        "shutdown": "2027-01-20",
        "replacement": "gpt-realtime-2.1",
        "context_window": 32_768,
        "reasoning": False,
    }
    assert describe(DEFAULT_MODEL, TODAY)["status"] == "current"
    assert describe(DEFAULT_MODEL, TODAY)["replacement"] is None
    assert describe("gpt-realtime", date(2027, 2, 1))["status"] == "shut down"
    assert describe("my-azure-deployment", TODAY) == {
        "name": "my-azure-deployment",
        "status": "unknown",
    }


def test_start_warns_once_per_deprecated_model(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge")
    settings = Settings.model_validate(
        {"model": "gpt-realtime", "transcription_model": "gpt-transcribe"}
    )
    lines = warn_deprecated(settings, TODAY)
    assert len(lines) == 1 and "2027-01-20" in lines[0]
    assert [r.getMessage() for r in caplog.records] == lines
    current = Settings.model_validate({"transcription_model": ""})
    assert warn_deprecated(current, TODAY) == []


def test_the_models_page_lists_every_model_its_status_and_the_price_tables_date() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "models-and-prices.md").read_text()
    table = render_models(date.fromisoformat(PRICES_READ))
    assert table in page, "regenerate: python -m bridge.settings.doc models"
    for name in MODELS:
        assert f"| `{name}` |" in table
    assert "**deprecated** 2027-01-20; use `gpt-realtime-2.1`" in table
    assert f"read on **{PRICES_READ}**" in page
