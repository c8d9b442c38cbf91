"""The h1 transport: a request written in one piece, an :class:`Answer` read as it arrives.

What it does per call: take a connection from the pool, write the request line, headers and
body in one ``transport.write``, wait for the status and headers, and hand back the answer, whose
body is read piece by piece as the caller asks.

What it does not do, by design: retry (a POST that may have reached the upstream is never sent
twice: that could bill twice), decompress (the bytes come as they were sent; gateway/upstream/
client.py decodes what it asked for), follow redirects, or time out reads: the callers bound every
wait (gateway/upstream/client.py and gateway/call/stream.py use ``asyncio.timeout``). The connect
timeout is the caller's, TLS handshake included.

Errors are gateway/upstream/transport.py's: ``ConnectFailed``/``ConnectTimeout`` (the ``OSError``
as ``__cause__``, so gateway/upstream/descriptors.py still sees ``EMFILE``), ``Dropped`` for a
connection that ended before the answer's headers, ``UnreadableAnswer`` for an answer that came
but cannot be read: malformed, over the header limits, or cut short in its body.
"""

from __future__ import annotations

import asyncio
import ssl

from gateway.upstream.http1.connection import Answer, Connection
from gateway.upstream.http1.pool import Origin, Pool
from gateway.upstream.transport import ConnectFailed, ConnectTimeout, Target


class H1Transport:
    """HTTP/1.1 over asyncio protocols and httptools, with a keep-alive pool per origin.

    ``read_buffer_bytes``: the body held unread per answer before reading from the socket
    pauses. ``ssl_context``: for https (default: certifi's CA bundle, as httpx's).
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

    async def post(self, target: Target, body: bytes, connect_timeout_s: float | None) -> Answer:
        origin = (target.scheme, target.host, target.port)
        conn = await self.pool.acquire(origin, lambda: self._connect(origin, connect_timeout_s))
        answer = conn.send(target.request(body), self.read_buffer_bytes)
        try:
            await answer.head
        except BaseException:  # failed, or the caller gave up: the exchange is half done
            conn.abort()
            raise
        return answer

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
            raise ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:  # refused, unreachable, out of descriptors, TLS refused
            raise ConnectFailed(f"connecting to {host}:{port} failed: {exc}") from exc
        return conn

    def ssl_context(self) -> ssl.SSLContext:
        """Built on first https use: a gateway calling a plain-http upstream never loads the CA bundle."""
        if self._ssl_context is None:
            import httpx  # only for its CA bundle (certifi's), once: not on any call's path

            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def aclose(self) -> None:
        await self.pool.aclose()
