"""A raw HTTP/1.1 server for transport tests: each test scripts the bytes every connection gets.

It runs on the test's own event loop (asyncio streams), counts the connections it accepted and
the ones open, and records each request as received. ``script(peer)`` plays one connection; it
ends by returning (the server then closes the connection) or raising ConnectionError.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


class Peer:
    """One accepted connection, from the server's side."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer

    async def request(self) -> Request | None:
        """The next request (head and Content-Length body), or None once the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        request = Request(head, b"")
        length = request.header(b"content-length")
        if length:
            request.body = await self.reader.readexactly(int(length))
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def closed_by_client(self) -> bool:
        """Wait for the client's end of the connection: True if it closed with nothing more sent."""
        return await self.reader.read(1) == b""


Script = Callable[[Peer], Awaitable[None]]


@dataclass
class RawServer:
    script: Script
    tls: ssl.SSLContext | None = None
    accepts: int = 0
    open: int = 0
    peak_open: int = 0
    requests: list[Request] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def url(self, path: str = "/v1/images/generations", host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            await self.script(Peer(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


def answer(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    """A whole answer with a Content-Length."""
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status,
        extra,
        len(body),
        body,
    )


async def keep_answering(peer: Peer) -> None:
    """Answer every request on the connection with its own body, keeping the connection open."""
    while (request := await peer.request()) is not None:
        await peer.send(answer(b'{"echo": ' + request.body + b"}"))


async def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` on the event loop until it holds (a condition, not a guessed delay)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.002)
    assert condition(), what
