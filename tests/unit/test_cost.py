"""Pricing recorded usage objects against figures worked out by hand in each test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bridge.billing.cost import (
    Pricer,
    Spend,
    post,
    price,
    response_tokens,
    transcription_tokens,
)
from bridge.billing.prices import ModelPrice, price_of
from bridge.room.budget import BudgetState, RoomCost, notice
from bridge.settings.config import (
    ConfigError,
    SessionOverrides,
    Settings,
    apply_overrides,
    load_settings,
)

# A response.done usage as the service sends it: cached tokens are part of the input.
RESPONSE_USAGE = {
    "total_tokens": 5415,
    "input_tokens": 4965,
    "output_tokens": 450,
    "input_token_details": {
        "text_tokens": 1200,
        "audio_tokens": 3000,
        "image_tokens": 765,
        "cached_tokens": 2000,
        "cached_tokens_details": {"text_tokens": 1000, "audio_tokens": 1000, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 50, "audio_tokens": 400},
}
# gpt-realtime-2.1 (the default model), USD per 1M: text 4 / cached 0.40 / out 24; audio 32 /
# cached 0.40 / out 64; image 5.
#   text in    200 * 4.00  =    800
#   text cached 1000 * 0.40 =   400
#   audio in  2000 * 32.00 = 64,000
#   audio cached 1000 * 0.40 =  400
#   image in   765 * 5.00  =  3,825
#   text out    50 * 24.00 =  1,200
#   audio out  400 * 64.00 = 25,600      sum 96,225 / 1M
RESPONSE_USD = 0.096225
# gpt-realtime (deprecated): the same but text out 16: 50 * 16 = 800, sum 95,825 / 1M.
GPT_REALTIME_USD = 0.095825


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_response_priced_with_cached_tokens_once() -> None:
    tokens = response_tokens(RESPONSE_USAGE)
    assert tokens == {
        "text_in": 200,
        "text_in_cached": 1000,
        "audio_in": 2000,
        "audio_in_cached": 1000,
        "image_in": 765,
        "image_in_cached": 0,
        "text_out": 50,
        "audio_out": 400,
    }
    table = Settings().prices
    assert Settings().model == "gpt-realtime-2.1"
    assert price(tokens, 0.0, price_of(table, "gpt-realtime-2.1")) == pytest.approx(RESPONSE_USD)
    assert price(tokens, 0.0, price_of(table, "gpt-realtime")) == pytest.approx(GPT_REALTIME_USD)
    # gpt-realtime-mini: 200*.6 + 1000*.06 + 2000*10 + 1000*.3 + 765*.8 + 50*2.4 + 400*20
    #   = 120 + 60 + 20000 + 300 + 612 + 120 + 8000 = 29,212
    mini = price(tokens, 0.0, price_of(table, "gpt-realtime-mini"))
    assert mini == pytest.approx(0.029212)
    # A dated snapshot is priced as its family.
    assert price_of(table, "gpt-realtime-2025-08-28") == price_of(table, "gpt-realtime")


def test_cached_without_details_comes_off_text_first() -> None:
    usage = {
        "input_token_details": {"text_tokens": 1000, "audio_tokens": 3000, "cached_tokens": 1500},
        "output_token_details": {"text_tokens": 10, "audio_tokens": 0},
    }
    tokens = response_tokens(usage)
    assert (tokens["text_in"], tokens["text_in_cached"]) == (0, 1000)
    assert (tokens["audio_in"], tokens["audio_in_cached"]) == (2500, 500)
    # 2500*32 + 500*0.40 + 1000*0.40 + 10*16 = 80,000 + 200 + 400 + 160 = 80,760
    assert price(tokens, 0.0, Settings().prices["gpt-realtime"]) == pytest.approx(0.08076)


def test_transcription_usage_priced() -> None:
    table = Settings().prices
    tokens_usage = {
        "type": "tokens",
        "total_tokens": 170,
        "input_tokens": 150,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 150},
        "output_tokens": 20,
    }
    tokens, seconds = transcription_tokens(tokens_usage)
    assert (tokens, seconds) == ({"text_in": 0, "audio_in": 150, "text_out": 20}, 0.0)
    # gpt-4o-mini-transcribe: 150 * 3.00 + 20 * 5.00 = 550 / 1M
    assert price(tokens, seconds, table["gpt-4o-mini-transcribe"]) == pytest.approx(0.00055)
    # whisper-1 bills 30 s at $0.006 per minute.
    tokens, seconds = transcription_tokens({"type": "duration", "seconds": 30})
    assert price(tokens, seconds, table["whisper-1"]) == pytest.approx(0.003)
    # Duration-billed usage against a token-only price is unknown, not zero.
    assert price(tokens, seconds, table["gpt-4o-transcribe"]) is None


def test_pricer_adds_to_every_spend_and_unknown_stays_unknown() -> None:
    table = Settings().prices
    session, room = Spend(), Spend()
    pricer = Pricer(table, "gpt-realtime-2.1", "gpt-4o-mini-transcribe")
    pricer.response(RESPONSE_USAGE, session, room)
    pricer.transcription(
        {"type": "tokens", "input_tokens": 150, "output_tokens": 20, "total_tokens": 170},
        session,
        room,
    )
    for spend in (session, room):
        assert spend.cost_usd == pytest.approx(RESPONSE_USD + 0.00055)
        assert spend.responses == 1
        assert spend.tokens["audio_in_cached"] == 1000
        assert spend.tokens["transcription_audio_in"] == 150
    unknown = Spend()
    Pricer(table, "my-azure-deployment", "").response(RESPONSE_USAGE, unknown)
    assert unknown.cost_usd is None
    assert "unknown" in unknown.describe() and "my-azure-deployment" in unknown.describe()
    assert unknown.summary()["cost_usd"] is None
    # Zero usage of an unpriced model costs nothing known: still zero, not unknown.
    assert price({"text_in": 0}, 0.0, None) == 0.0


def test_prices_from_toml_and_environment_merge_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text('max_room_cost_usd = 2.5\n\n[prices."gpt-realtime"]\naudio_in = 40.0\n')
    loaded = load_settings(path)
    assert loaded.prices["gpt-realtime"].audio_in == 40.0
    assert loaded.prices["gpt-realtime"].audio_out == 64.0  # the rest of the model kept
    assert "gpt-realtime-mini" in loaded.prices
    monkeypatch.setenv("BRIDGE_PRICES", json.dumps({"azure-rt": {"audio_in": 1, "audio_out": 2}}))
    loaded = load_settings(path)
    assert loaded.prices["azure-rt"] == ModelPrice(audio_in=1, audio_out=2)
    assert "gpt-realtime" in loaded.prices
    monkeypatch.setenv("BRIDGE_PRICES", '{"x": {"audio_in": -1}}')
    with pytest.raises(ConfigError, match="prices"):
        load_settings(path)
    monkeypatch.setenv("BRIDGE_PRICES", '{"x": {"audio_inn": 1}}')
    with pytest.raises(ConfigError, match="prices"):
        load_settings(path)


def test_metadata_may_lower_the_budget_never_raise_it() -> None:
    base = settings(max_room_cost_usd=5.0)
    lower = apply_overrides(base, SessionOverrides(max_room_cost_usd=1.0))
    higher = apply_overrides(base, SessionOverrides(max_room_cost_usd=50.0))
    assert lower.max_room_cost_usd == 1.0
    assert higher.max_room_cost_usd == 5.0
    # No operator budget: a room may set one for itself.
    assert apply_overrides(Settings(), SessionOverrides(max_room_cost_usd=3.0)).max_room_cost_usd
    with pytest.raises(ValueError, match="max_room_cost_usd"):
        SessionOverrides.model_validate({"max_room_cost_usd": -1})


def test_room_budget_warns_at_80_percent_and_acts_once() -> None:
    told: list[str] = []
    room = RoomCost(settings(max_room_cost_usd=0.2), "r", on_exceeded=told.append)
    alice, bob = room.session(), room.session()
    alice.response(RESPONSE_USAGE)  # 0.0962
    states = [room.state]
    bob.response(RESPONSE_USAGE)  # 0.1925 >= 80 % of 0.2
    states.append(room.state)
    assert not told
    alice.response(RESPONSE_USAGE)  # 0.2887 > 0.2
    bob.response(RESPONSE_USAGE)
    states.append(room.state)
    assert states == [BudgetState.OK, BudgetState.WARNED, BudgetState.EXCEEDED]
    assert told == [notice(room.settings, 0.2, 3 * RESPONSE_USD)]
    assert "$0.29 of $0.20" in told[0] and "only listen" in told[0]
    assert alice.spend.responses == 2 and room.spend.responses == 4
    assert room.status()["budget"] == "exceeded"
    assert room.status()["cost_usd"] == pytest.approx(4 * RESPONSE_USD, abs=1e-6)
    leave = settings(max_room_cost_usd=0.1, budget_action="leave")
    assert "leaving the room" in notice(leave, 0.1, 0.2)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_charge_is_booked_once_into_every_spend_and_the_metrics() -> None:
    """The usage ledger: one post feeds the session's and the room's spend, the tokens metric
    (and, for one release, its old name with the API's kinds) and the cost metric."""
    model = "gpt-realtime-2.1"
    pricer = Pricer(Settings().prices, model, "gpt-4o-mini-transcribe")
    session, room = Spend(), Spend()
    before = {
        "cached": _sample("bridge_tokens_used_total", model=model, kind="audio_in_cached"),
        "old_audio": _sample("bridge_tokens_total", kind="input_audio"),
        "old_cached": _sample("bridge_tokens_total", kind="input_cached"),
        "old_transcription": _sample("bridge_tokens_total", kind="transcription_audio_in"),
        "usd": _sample("bridge_cost_usd_total", model=model),
    }
    post(pricer.charge_response(RESPONSE_USAGE), session, room)
    post(
        pricer.charge_transcription({"type": "tokens", "input_tokens": 150, "output_tokens": 0}),
        session,
        room,
    )
    for spend in (session, room):
        assert spend.responses == 1 and spend.transcriptions == 1
        assert spend.tokens["audio_in_cached"] == 1000
        assert spend.tokens["transcription_audio_in"] == 150
        assert spend.cost_usd == pytest.approx(RESPONSE_USD + 150 * 3.00 / 1e6)
    cached = _sample("bridge_tokens_used_total", model=model, kind="audio_in_cached")
    assert cached - before["cached"] == 1000
    assert _sample("bridge_tokens_total", kind="input_audio") - before["old_audio"] == 3000
    assert _sample("bridge_tokens_total", kind="input_cached") - before["old_cached"] == 2000
    old_transcription = _sample("bridge_tokens_total", kind="transcription_audio_in")
    assert old_transcription - before["old_transcription"] == 150
    usd = _sample("bridge_cost_usd_total", model=model) - before["usd"]
    assert usd == pytest.approx(RESPONSE_USD)
