"""The emulator's bill: input is the whole context, the unchanged prefix is cached, truncation
drops the oldest items (auto: just enough; retention_ratio: down to that share)."""

from __future__ import annotations

from typing import Any

from bridge.emulator.billing import Bill, input_limit
from bridge.emulator.conversation import Entry

SESSION: dict[str, Any] = {"instructions": "x" * 40, "max_output_tokens": "inf"}  # 10 tokens


def respond(bill: Bill, entries: list[Entry], session: dict[str, Any] = SESSION) -> dict[str, Any]:
    answer = Entry(id=f"a{len(entries)}", role="assistant", type="message", text="")
    usage = bill.response(
        response_id=f"resp{len(entries)}",
        status="completed",
        session=session,
        entries=[*entries, answer],
        exclude={answer.id},
        out_audio_ms=1000,
        out_text="Hello there",
    )
    answer.text, answer.audio_ms = "Hello there", 1000
    entries.append(answer)
    return usage


def test_usage_counts_the_context_and_caches_the_unchanged_prefix() -> None:
    bill = Bill()
    entries = [Entry(id="u1", role="user", type="message", text="hi", audio_ms=2000)]
    first = respond(bill, entries)
    # instructions 10 text tokens; 2 s of user audio = 20 audio tokens; nothing cached yet.
    details = first["input_token_details"]
    assert (details["text_tokens"], details["audio_tokens"], details["cached_tokens"]) == (
        10,
        20,
        0,
    )
    # Output: 1 s of model audio = 20 tokens; "Hello there" = 3 text tokens.
    assert first["output_token_details"] == {"text_tokens": 3, "audio_tokens": 20}
    entries.append(Entry(id="t2", role="user", type="message", text="y" * 80))  # 20 tokens
    second = respond(bill, entries)
    details = second["input_token_details"]
    # instructions 10 + user audio 20 + answer audio 20 + new text 20
    assert details["text_tokens"] == 30 and details["audio_tokens"] == 40
    # Cached: what the first response read (instructions + u1), unchanged.
    assert details["cached_tokens"] == 30
    assert details["cached_tokens_details"] == {
        "text_tokens": 10,
        "audio_tokens": 20,
        "image_tokens": 0,
    }
    # Deleting the first item changes the prefix: only the instructions stay cached.
    del entries[0]
    third = respond(bill, entries)
    assert third["input_token_details"]["cached_tokens"] == 10
    assert len(bill.responses) == 3 and bill.responses[-1]["usage"] == third


def test_retention_ratio_keeps_the_cached_prefix_stable() -> None:
    limit = input_limit(SESSION)
    turn_ms = 100_000  # 1,000 user audio tokens per turn

    def run(session: dict[str, Any]) -> list[int]:
        bill, entries, cached = Bill(), [], []
        for n in range(60):
            entries.append(
                Entry(id=f"u{n}", role="user", type="message", text="", audio_ms=turn_ms)
            )
            usage = respond(bill, entries, session)
            assert usage["input_tokens"] <= limit
            cached.append(usage["input_token_details"]["cached_tokens"])
        return cached

    auto = run(SESSION)
    ratio = run({**SESSION, "truncation": {"type": "retention_ratio", "retention_ratio": 0.5}})
    # Past the limit, auto drops the oldest turn on every response: only the instructions
    # stay cached; retention_ratio drops half at once and then caches for many turns.
    assert auto[-1] == 10
    assert sum(ratio[30:]) > 3 * sum(auto[30:])


def test_transcription_usage_by_model() -> None:
    bill = Bill()
    tokens = bill.transcription("gpt-4o-mini-transcribe", "hello world", 1500)
    assert tokens["input_token_details"]["audio_tokens"] == 15 and tokens["output_tokens"] == 3
    assert bill.transcription("whisper-1", "hi", 1500) == {"type": "duration", "seconds": 1.5}
    assert len(bill.transcriptions) == 2
    assert bill.transcription("gpt-transcribe", "hi", 2000) == {"type": "duration", "seconds": 2.0}


def test_truncation_follows_the_session_models_context() -> None:
    assert input_limit(SESSION) == 28_224  # no model: bounded like the smallest window
    assert input_limit({**SESSION, "model": "gpt-realtime"}) == 28_224
    assert input_limit({**SESSION, "model": "gpt-realtime-2.1"}) == 95_552
    assert input_limit({**SESSION, "model": "gpt-realtime-2.1", "max_output_tokens": 4096}) == (
        128_000 - 448 - 4096
    )
    # 40 turns of 1,000 audio tokens: past a 32k model's limit, within a 128k one's.
    for model, truncated in (("gpt-realtime-1.5", True), ("gpt-realtime-2.1", False)):
        bill, entries = Bill(), []
        for n in range(40):
            entries.append(
                Entry(id=f"u{n}", role="user", type="message", text="", audio_ms=100_000)
            )
            usage = respond(bill, entries, {**SESSION, "model": model})
        assert (usage["input_tokens"] < 40_000) is truncated, model
