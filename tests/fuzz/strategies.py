"""Hypothesis strategies for input from outside: any JSON, hostile strings, secrets to look for."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Marked secrets: configured as keys, and never to appear in any output.
LIVEKIT_SECRET = "lk-secret-FUZZ-4b1d9c0e7a5f3b2d8c6e"
OPENAI_KEY = "sk-fuzz-SECRET-9f8e7d6c5b4a3928"
DISPATCH_TOKEN = "dispatch-FUZZ-token-1a2b3c4d5e6f"
SECRETS = (LIVEKIT_SECRET, OPENAI_KEY, DISPATCH_TOKEN)

# Text that breaks naive code: control characters, surrogate-free unicode, huge runs.
hostile_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.sampled_from(["", " ", "\x00", "\r\n", "{", "}", "[", "null", "true", "NaN", "1e999"]),
    st.integers(min_value=10_000, max_value=200_000).map(lambda n: "x" * n),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value (nested lists and objects of scalars)."""
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=20), inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def no_secret(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)
