"""HTTP tools: a signed ``POST`` of the call to the tool's URL; the answer is the output.

The body is ``{"name", "arguments", "call_id", "room", "participant": {"identity", "name"}}``
(``participant`` is null in shared mode when no one can be named as the caller). Redirects are not
followed (a tool cannot send the bridge elsewhere), the answer is read up to
``tool_output_max_bytes``, and the tool's ``timeout`` bounds the whole exchange (httpx's own
timeout is per network operation: a server trickling bytes would never hit it).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from bridge.room.tools.outcome import ToolFailure
from bridge.room.tools.signing import Signer
from bridge.settings.config import Settings
from bridge.settings.tools import ToolSpec


@dataclass(frozen=True)
class Caller:
    """Who the call is for: the human whose turn the model answered with the call."""

    identity: str
    name: str


class HttpTools:
    def __init__(self, settings: Settings) -> None:
        self._signer = Signer(settings.tools_secret) if settings.tools_secret else None
        self._max_bytes = settings.tool_output_max_bytes
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def call(
        self,
        tool: ToolSpec,
        arguments: dict[str, Any],
        call_id: str,
        *,
        room: str,
        caller: Caller | None,
        timeout: float,
    ) -> str:
        assert tool.url is not None
        if self._signer is None:  # settings validation requires it; never send unsigned
            raise ToolFailure("not_configured", "the tool is not configured")
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        participant = (
            {"identity": caller.identity, "name": caller.name} if caller is not None else None
        )
        body = json.dumps(
            {
                "name": tool.name,
                "arguments": arguments,
                "call_id": call_id,
                "room": room,
                "participant": participant,
            },
            separators=(",", ":"),
        ).encode()
        # webhook-id doubles as the receiver's idempotency key: one per call.
        signed = self._signer.headers(f"msg_{call_id}", body)
        headers = {"content-type": "application/json", **signed}
        try:
            async with (
                asyncio.timeout(timeout),
                self._client.stream(
                    "POST", tool.url, content=body, headers=headers, timeout=timeout
                ) as response,
            ):
                if not 200 <= response.status_code < 300:
                    raise ToolFailure(
                        "http_error", f"the tool failed (HTTP {response.status_code})"
                    )
                data = await self._read(response)
                kind = response.headers.get("content-type", "")
        except (TimeoutError, httpx.TimeoutException):
            raise ToolFailure("timeout", f"the tool did not answer within {timeout:g} s") from None
        except httpx.HTTPError:
            raise ToolFailure("unreachable", "the tool could not be reached") from None
        return self._output(data, kind)

    async def _read(self, response: httpx.Response) -> bytes:
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > self._max_bytes:
                raise ToolFailure(
                    "too_large", f"the tool's answer was larger than {self._max_bytes} bytes"
                )
        return bytes(data)

    def _output(self, data: bytes, content_type: str) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolFailure("invalid_answer", "the tool's answer was not UTF-8 text") from None
        if "json" in content_type.lower():
            try:
                return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
            except (ValueError, RecursionError):
                raise ToolFailure("invalid_answer", "the tool's answer was not JSON") from None
        return text
