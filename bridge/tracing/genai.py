"""OpenTelemetry's GenAI semantic conventions for the model side, and our cost.

The names are the conventions' own (``gen_ai.*``, checked against the semantic-conventions
package by a unit test); values come from what the bridge already knows: the provider from the
endpoint, the request model from the settings, usage from each ``response.done``, the cost from
the price table. Nothing here carries text people said or a tool's argument values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
CONVERSATION_ID = "gen_ai.conversation.id"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
# Ours, beside the conventions: what a response cost by the price table (absent: unpriced).
COST_USD = "bridge.cost.usd"

# Operation names: a call and its responses are a conversation ("chat"); a tool call is
# "execute_tool" (its span named "execute_tool <name>", as the conventions say).
CHAT = "chat"
EXECUTE_TOOL = "execute_tool"


def provider_name(base_url: str, auth_header: str) -> str:
    """``openai``, ``azure.ai.openai`` (Azure's endpoint or its ``api-key`` header), or
    ``openai`` for the local emulator too (it speaks OpenAI's protocol)."""
    host = (urlsplit(base_url).hostname or "").lower()
    if host.endswith((".openai.azure.com", ".cognitiveservices.azure.com")):
        return "azure.ai.openai"
    if auth_header.lower() == "api-key":
        return "azure.ai.openai"
    return "openai"


def call_attributes(*, provider: str, model: str, call_id: str | None) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        OPERATION_NAME: CHAT,
        PROVIDER_NAME: provider,
        REQUEST_MODEL: model,
    }
    if call_id:
        attributes[CONVERSATION_ID] = call_id
    return attributes


def _int(mapping: Any, key: str) -> int:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, int) and value >= 0 else 0


def usage_attributes(
    usage: Mapping[str, Any] | None, cost_usd: float | None
) -> dict[str, AttributeValue]:
    """A ``response.done`` usage object (and what it cost) as span attributes."""
    attributes: dict[str, AttributeValue] = {}
    if isinstance(usage, Mapping):
        attributes[USAGE_INPUT_TOKENS] = _int(usage, "input_tokens")
        attributes[USAGE_OUTPUT_TOKENS] = _int(usage, "output_tokens")
        cached = _int(usage.get("input_token_details"), "cached_tokens")
        if cached:
            attributes[USAGE_CACHE_READ_INPUT_TOKENS] = cached
    if cost_usd is not None:
        attributes[COST_USD] = round(cost_usd, 8)
    return attributes


def tool_attributes(*, name: str, kind: str, call_id: str) -> dict[str, AttributeValue]:
    """A tool call's span: its name, our kind (http, rpc, builtin, mcp) and the model's call id;
    never its argument values."""
    return {
        OPERATION_NAME: EXECUTE_TOOL,
        TOOL_NAME: name,
        TOOL_TYPE: "extension" if kind == "mcp" else "function",
        TOOL_CALL_ID: call_id,
        "bridge.tool.kind": kind,
    }
