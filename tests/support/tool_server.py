"""A tool endpoint for tests: a real HTTP server on loopback that checks every request's
Standard Webhooks signature with an implementation independent of ours (openai-python's)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import openai
from aiohttp import web


@dataclass
class ToolServer:
    secret: str
    slow_seconds: float = 5.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> ToolServer:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        verifier = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9").webhooks
        try:
            verifier.verify_signature(body, dict(request.headers), secret=self.secret)
        except openai.InvalidWebhookSignatureError:
            self.rejected += 1
            return web.Response(status=401, text="bad signature")
        payload = json.loads(body)
        self.requests.append(payload)
        self.headers.append(dict(request.headers))
        name = request.match_info["name"]
        if name == "orders":
            number = payload["arguments"]["number"]
            return web.json_response({"order": number, "status": "shipped on Monday"})
        if name == "slow":
            await asyncio.sleep(self.slow_seconds)
            return web.Response(text="too late")
        if name == "broken":
            return web.Response(status=500, text="Traceback (most recent call last): secret=xyz")
        if name == "big":
            return web.Response(text="x" * 100_000)
        if name == "badjson":
            return web.Response(text="{not json", content_type="application/json")
        if name == "drip":
            return await self._drip(request)
        return web.Response(status=404)

    @staticmethod
    async def _drip(request: web.Request) -> web.StreamResponse:
        """A byte every 0.3 s for 3 s: each read is quick, the whole answer is not."""
        response = web.StreamResponse(headers={"content-type": "text/plain"})
        await response.prepare(request)
        try:
            for _ in range(10):
                await response.write(b".")
                await asyncio.sleep(0.3)
            await response.write_eof()
        except ConnectionError:
            pass  # the bridge gave up on it, as it should
        return response
