"""Declared tools: ``[[tools]]`` and ``[[mcp_servers]]`` in the settings.

Only operators declare tools (TOML or ``BRIDGE_TOOLS`` / ``BRIDGE_MCP_SERVERS`` as JSON lists);
room metadata may only select among them by name (see
``bridge.settings.config.apply_overrides``), so nothing a room creator writes can make the
bridge call an address.

Each tool has exactly one target: ``url`` (an HTTP endpoint we POST to, signed), ``rpc`` (a
LiveKit RPC method on the human's own app) or ``builtin`` (``end_call`` / ``leave_room``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Builtin = Literal["end_call", "leave_room"]
ToolChoice = Literal["auto", "none", "required"]

# The Realtime API's function names: letters, digits, underscores and dashes, at most 64.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ToolSpec(BaseModel):
    """One function the model may call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The function name the model sees.")
    description: str = Field(default="", max_length=1024)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments (validated before the tool runs).",
    )
    url: str | None = None
    rpc: str | None = Field(default=None, min_length=1, max_length=128)
    builtin: Builtin | None = None
    timeout: float | None = Field(default=None, gt=0, le=300)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must be 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"url {value!r} must start with http:// or https://")
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Imported here: jsonschema costs every command's start-up, and most declare no tools.
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from None
        if value.get("type") != "object":
            raise ValueError('parameters must be a JSON Schema with "type": "object"')
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ToolSpec:
        targets = [t for t in ("url", "rpc", "builtin") if getattr(self, t) is not None]
        if len(targets) != 1:
            raise ValueError(
                f"tool {self.name!r} needs exactly one of url, rpc, builtin (has "
                f"{', '.join(targets) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return "http" if self.url else "rpc" if self.rpc else "builtin"

    def definition(self) -> dict[str, Any]:
        """The session's ``tools`` entry."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


class McpServer(BaseModel):
    """An MCP server the Realtime service calls itself (``type: mcp``, approval ``never``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(description="server_label the model sees.")
    url: str
    description: str | None = Field(default=None, max_length=1024)
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Headers sent to the server; ${NAME} in a value is read from the "
        "environment (keep secrets there).",
    )
    allowed_tools: list[str] | None = None

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"label {value!r} must be 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url {value!r} must start with http:// or https://")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, raw in value.items():
            text = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
            if not isinstance(text, str):
                raise ValueError(f"header {key!r} must be a string")
            out[key] = SecretStr(_expand_env(text, key))
        return out

    def definition(self) -> dict[str, Any]:
        """The session's ``tools`` entry (secrets included: this goes to the model service)."""
        tool: dict[str, Any] = {
            "type": "mcp",
            "server_label": self.label,
            "server_url": self.url,
            "require_approval": "never",
        }
        if self.description:
            tool["server_description"] = self.description
        if self.headers:
            tool["headers"] = {k: v.get_secret_value() for k, v in self.headers.items()}
        if self.allowed_tools is not None:
            tool["allowed_tools"] = list(self.allowed_tools)
        return tool


def _expand_env(text: str, header: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise ValueError(f"header {header!r} names ${{{name}}}, which is not set")
        return found.strip()

    return _ENV_REF.sub(value, text)


def check_tools(tools: list[ToolSpec], servers: list[McpServer], secret: bool) -> list[str]:
    """What is wrong with the tool declarations as a whole (one line each)."""
    problems = []
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            problems.append(f"tool name {tool.name!r} is declared twice")
        seen.add(tool.name)
    labels = [s.label for s in servers]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"mcp server label {label!r} is declared twice")
    if not secret and any(t.url for t in tools):
        problems.append("HTTP tools need tools_secret (BRIDGE_TOOLS_SECRET) to sign their calls")
    return problems


def check_secret(value: str) -> None:
    """``whsec_<base64 of at least 24 bytes>`` (Standard Webhooks)."""
    import base64
    import binascii

    if not value.startswith("whsec_"):
        raise ValueError("must look like whsec_<base64>")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must look like whsec_<base64> (not base64 after whsec_)") from None
    if len(key) < 24:
        raise ValueError("must hold at least 24 random bytes")
