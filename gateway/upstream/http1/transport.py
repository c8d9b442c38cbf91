"""The httpx transport: an ``httpx.Request`` in, an ``httpx.Response`` with a streamed body out.

What it does per request: take a connection from the pool, write the request line, headers and
body in one ``transport.write``, wait for the status and headers, and hand back a response whose
body is read piece by piece as the caller asks (:class:`BodyStream`).

What it does not do, by design: retry (a POST that may have reached the upstream is never sent
twice: that could bill twice), decompress (the bytes are passed through as they came), follow
redirects, or time out reads: the callers bound every wait (gateway/upstream/client.py and
gateway/call/stream.py use ``asyncio.timeout``). The connect timeout is the request's
``extensions["timeout"]["connect"]``, TLS handshake included.

Errors are httpx's: ``ConnectError``/``ConnectTimeout`` (the ``OSError`` as ``__cause__``, so
gateway/upstream/descriptors.py still sees ``EMFILE``), ``ReadError`` for a connection that ended before
the answer's headers, and :class:`UnreadableAnswer` (a ``RemoteProtocolError``) for an answer
that came but cannot be read: malformed, over the header limits, or cut short in its body.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx

from gateway.upstream.http1.connection import Answer, Connection
from gateway.upstream.http1.pool import Origin, Pool

DEFAULT_PORTS = {"http": 80, "https": 443}
HTTP_11 = {"http_version": b"HTTP/1.1"}


class BodyStream(httpx.AsyncByteStream):
    """An answer's body as the socket delivers it; closing it early closes its connection."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self.answer.read
        while chunk := await read():
            yield chunk

    async def aclose(self) -> None:
        self.answer.abandon()


class H1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio protocols and httptools, with a keep-alive pool per origin.

    ``read_buffer_bytes``: the body held unread per response before reading from the socket
    pauses. ``ssl_context``: for https (default: httpx's, with certifi's CA bundle).
    """

    def __init__(
        self,
        max_connections: int = 100,
        keepalive_s: float = 30.0,
        read_buffer_bytes: int = 256 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.pool = Pool(max_connections, keepalive_s)
        self.read_buffer_bytes = read_buffer_bytes
        self._ssl_context = ssl_context

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"{scheme!r} URLs are not supported (http and https are)")
        origin = (scheme, url.host, url.port or DEFAULT_PORTS[scheme])
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        payload = _serialize(request, body)
        timeout = request.extensions.get("timeout", {}).get("connect")
        conn = await self.pool.acquire(origin, lambda: self._connect(origin, timeout))
        answer = conn.send(payload, self.read_buffer_bytes)
        try:
            await answer.head
        except BaseException:  # failed, or the caller gave up: the exchange is half done
            conn.abort()
            raise
        extensions = {**HTTP_11, "reason_phrase": answer.reason}
        return httpx.Response(
            answer.status_code,
            headers=answer.headers,
            stream=BodyStream(answer),
            request=request,
            extensions=extensions,
        )

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self.ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self.pool, origin, loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:  # refused, unreachable, out of descriptors, TLS refused
            raise httpx.ConnectError(f"connecting to {host}:{port} failed: {exc}") from exc
        return conn

    def ssl_context(self) -> ssl.SSLContext:
        """Built on first https use (loading the CA bundle takes ~30 ms)."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def aclose(self) -> None:
        await self.pool.aclose()


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """Request line, headers and body as one buffer. httpx has set Host and Content-Length."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    raw = request.headers.raw
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:  # a CR or LF inside a header
        raise httpx.LocalProtocolError("a request header contains a line break")
    return head + body if body else head
