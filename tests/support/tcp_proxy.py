"""A loopback TCP proxy in front of a local server that can cut some of its connections.

``cut("/agent")`` closes the connections whose HTTP request line asked for that path (LiveKit's
agent-worker WebSocket) while every other connection through the proxy (room signalling, the
server API) goes on: a dropped socket without a server restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from bridge.aio import TaskSet

CONNECT_TIMEOUT = 5.0
REQUEST_LINE_TIMEOUT = 10.0
CHUNK = 65_536


@dataclass(eq=False)
class _Connection:
    path: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def close(self) -> None:
        self.client.close()
        self.upstream.close()


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet("tcp-proxy")
        self._connections: set[_Connection] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self._connections):
            connection.close()
        await self._tasks.aclose()
        await self._server.wait_closed()

    def cut(self, path_prefix: str) -> int:
        """Close the connections whose request path starts with ``path_prefix``; how many."""
        cut = [c for c in self._connections if c.path.startswith(path_prefix)]
        for connection in cut:
            connection.close()
        return len(cut)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Owned by the proxy's task set (asyncio.start_server's own handler task is not).
        self._tasks.create_task(self._serve(reader, writer), name="connection")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_LINE_TIMEOUT)
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self._upstream_port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):  # the server is down (restarting): the client sees a close
            writer.close()
            return
        parts = line.split()
        path = parts[1].decode("latin-1") if len(parts) >= 2 else ""
        connection = _Connection(path, writer, up_writer)
        try:
            self._connections.add(connection)
            up_writer.write(line)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._connections.discard(connection)
            connection.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        writer.close()
