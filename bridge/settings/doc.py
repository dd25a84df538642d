"""Render the settings as the Markdown table of docs/settings.md or as annotated TOML, and the
model table with its prices as the tables of docs/models-and-prices.md.

``python -m bridge.settings.doc markdown|toml|models``; unit tests keep those two pages and
config/bridge.toml in step with ``bridge.settings.config.Settings`` and
``bridge.billing.models``.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from typing import Any

from pydantic import SecretStr

from bridge.billing.models import MODELS, ModelInfo
from bridge.billing.prices import DEFAULT_PRICES, PRICES_READ, SOURCES
from bridge.settings.config import TABLE_SETTINGS, Settings, env_name

SECTIONS = {
    "livekit_url": "LiveKit",
    "openai_api_key": "Model endpoint",
    "instructions": "Session sent to the model",
    "agent_name": "Room behaviour",
    "tools": "Tools",
    "prices": "Cost",
    "server_host": "Dispatch service",
    "log_level": "Logging",
    "trace_content": "Traces",
}


# Lists of tables: in TOML they are `[[name]]` tables, which must follow every plain key.
TABLE_LISTS = frozenset({"tools", "mcp_servers"})
# Tables with a built-in table of their own, written out at the end.
PRICE_TABLES = frozenset({"prices"})


def _default(name: str) -> Any:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _is_secret(name: str) -> bool:
    annotation = str(Settings.model_fields[name].annotation)
    return "SecretStr" in annotation or SecretStr is Settings.model_fields[name].annotation


def render_markdown() -> str:
    lines = [
        "| TOML key | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = _default(name)
        shown = "—" if default is None else f"`{_toml_value(default)}`"
        if (isinstance(default, str) and len(default) > 40) or name in PRICE_TABLES:
            shown = "(see config/bridge.toml)"
        lines.append(f"| `{name}` | `{env_name(name)}` | {shown} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


def render_toml() -> str:
    out = [
        "# realtime-room-bridge settings, with their defaults.",
        "# Every key can also be set in the environment (BRIDGE_<KEY>, or LIVEKIT_URL,",
        "# LIVEKIT_API_KEY, LIVEKIT_API_SECRET, OPENAI_API_KEY, OPENAI_BASE_URL); the",
        "# environment wins. Keep secrets in the environment, not in this file.",
        "# Regenerate with: python -m bridge.settings.doc toml > config/bridge.toml",
    ]
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            out += ["", f"# ---- {SECTIONS[name]} " + "-" * (60 - len(SECTIONS[name]))]
        out.append(f"# {field.description or ''}  [{env_name(name)}]")
        default = _default(name)
        if name in TABLE_LISTS:
            out.append(f"# (none by default: [[{name}]] tables, at the end of this file)")
        elif name in PRICE_TABLES:
            out.append(f'# (the [{name}."..."] tables are at the end of this file)')
        elif name in TABLE_SETTINGS:
            out.append(f"# (none by default; add a [{name}] table at the end of this file)")
        elif default is None or _is_secret(name):
            out.append(f"# {name} = ")
        else:
            out.append(f"{name} = {_toml_value(default)}")
    out += ["", f"# ---- Prices: USD per 1M tokens (OpenAI's published prices, {PRICES_READ}) ---"]
    out.append("# per_minute: USD per minute of audio, for models billed by duration.")
    out.append("# A kind left out is unknown (never zero). Add a table for any other model.")
    for model, kinds in DEFAULT_PRICES.items():
        source, read = SOURCES[model]
        out += ["", f"# {source}, read {read}", f"[prices.{json.dumps(model)}]"]
        out += [f"{kind} = {_toml_value(price)}" for kind, price in kinds.items()]
    return "\n".join(out) + "\n"


def _usd(kinds: dict[str, float], *names: str) -> str:
    shown = [f"{kinds[n]:g}" if n in kinds else "?" for n in names]
    return " / ".join(shown) if any(n in kinds for n in names) else "—"


def _status(info: ModelInfo, today: date) -> str:
    status = info.status(today)
    if status == "current":
        return "current"
    when = f" {info.shutdown.isoformat()}" if info.shutdown else ""
    use = f"; use `{info.replacement}`" if info.replacement else ""
    return f"**{status}**{when}{use}"


def _source(info: ModelInfo) -> str:
    if info.price is None or info.price not in SOURCES:
        return "unknown"
    url, read = SOURCES[info.price]
    page = "model page" if "/models/" in url else "pricing page"
    return f"[{page}]({url}), {read}"


def render_models(today: date) -> str:
    """The model table and its prices as the two Markdown tables of docs/models-and-prices.md."""
    lines = [
        "| model | status | context / max output | reasoning | audio in / cached / out "
        "| text in / cached / out | image in / cached | price read from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for info in MODELS.values():
        if info.kind != "realtime":
            continue
        kinds = DEFAULT_PRICES.get(info.price or "", {})
        window = (
            f"{info.context_window:,} / {info.max_output_tokens:,}"
            if info.context_window and info.max_output_tokens
            else "unknown"
        )
        reasoning = {True: "yes", False: "no", None: "unknown"}[info.reasoning]
        lines.append(
            f"| `{info.name}` | {_status(info, today)} | {window} | {reasoning} "
            f"| {_usd(kinds, 'audio_in', 'audio_in_cached', 'audio_out')} "
            f"| {_usd(kinds, 'text_in', 'text_in_cached', 'text_out')} "
            f"| {_usd(kinds, 'image_in', 'image_in_cached')} | {_source(info)} |"
        )
    lines += [
        "",
        "| transcription model | status | billed by | price | price read from |",
        "|---|---|---|---|---|",
    ]
    for info in MODELS.values():
        if info.kind != "transcription":
            continue
        kinds = DEFAULT_PRICES.get(info.price or "", {})
        if "per_minute" in kinds:
            price = f"${kinds['per_minute']:g} / minute"
        elif kinds:
            price = "audio in " + _usd(kinds, "audio_in") + ", text in / out "
            price += _usd(kinds, "text_in", "text_out") + " per 1M"
        else:
            price = "unknown"
        lines.append(
            f"| `{info.name}` | {_status(info, today)} | {info.billed_by} | {price} "
            f"| {_source(info)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["markdown"]:
        sys.stdout.write(render_markdown())
    elif argv == ["toml"]:
        sys.stdout.write(render_toml())
    elif argv == ["models"]:
        sys.stdout.write(render_models(date.fromisoformat(PRICES_READ)))
    else:
        print("usage: python -m bridge.settings.doc markdown|toml|models", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
