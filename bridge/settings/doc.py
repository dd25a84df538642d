"""Render the settings as the README's Markdown table or as annotated TOML.

``python -m bridge.settings.doc markdown`` / ``python -m bridge.settings.doc toml``; a unit test
keeps README.md and config/bridge.toml in step with ``bridge.settings.config.Settings``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import SecretStr

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


def main(argv: list[str]) -> int:
    if argv == ["markdown"]:
        sys.stdout.write(render_markdown())
    elif argv == ["toml"]:
        sys.stdout.write(render_toml())
    else:
        print("usage: python -m bridge.settings.doc markdown|toml", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
