"""The aiohttp transport: aiohttp's own client (``ClientSession``) under gateway/upstream/transport.py's API.

Kept beside gateway/upstream/http1/ to be measured against it on the same tests
(``GATEWAY_UPSTREAM_TRANSPORT=aiohttp``). It does the same job: one POST, the body read piece
by piece as the caller asks, reading paused while ``read_buffer_bytes`` wait unread (aiohttp's
``read_bufsize``), the connect timeout only (the callers bound every other wait), no retry, no
redirect, no decompression; aiohttp's errors are mapped to the API's.
"""

from __future__ import annotations

import ssl

import aiohttp

from gateway.upstream.transport import (
    ConnectFailed,
    ConnectTimeout,
    Dropped,
    Headers,
    PoolClosed,
    Target,
    UnreadableAnswer,
)

# Headers aiohttp would add of its own: the request carries exactly the target's.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class AiohttpAnswer:
    __slots__ = ("status", "headers", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status = response.status
        self.headers: Headers = list(response.raw_headers)
        self._response = response

    async def read(self) -> bytes:
        try:
            return await self._response.content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise UnreadableAnswer(f"the answer's body broke off: {exc!r}") from exc

    def close(self) -> None:
        self._response.release()  # back to the pool if the body ended, else closed


class AiohttpTransport:
    def __init__(
        self,
        max_connections: int = 100,
        keepalive_s: float = 30.0,
        read_buffer_bytes: int = 256 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections, self.keepalive_s = max_connections, keepalive_s
        self.read_buffer_bytes, self.ssl_context = read_buffer_bytes, ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._headers: dict[Target, dict[str, str]] = {}
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=self.keepalive_s)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # the body goes on as it came
            # Its reading pauses past twice this unread: the same high water as h1's.
            read_bufsize=max(1, self.read_buffer_bytes // 2),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    async def post(self, target: Target, body: bytes, connect_timeout_s: float | None) -> AiohttpAnswer:
        if self._closed:
            raise PoolClosed("the transport is closed")
        session = self._session or self._open()
        headers = self._headers.get(target)
        if headers is None:  # once per target: aiohttp sets Host and Content-Length itself
            fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in target.headers]
            headers = self._headers[target] = {k: v for k, v in fields if k.lower() != "host"}
        timeout = self._timeouts.get(connect_timeout_s)
        if timeout is None:  # sock_connect: the connection's opening, not the wait for one
            timeout = self._timeouts[connect_timeout_s] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout_s
            )
        try:
            tls = self._tls() if target.scheme == "https" else True
            response = await session.post(
                target.url, data=body, headers=headers, timeout=timeout, allow_redirects=False, ssl=tls
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectTimeout(f"connecting to {target.host}:{target.port} timed out") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ConnectFailed(f"connecting to {target.host}: {exc}") from exc.certificate_error
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(f"connecting to {target.host}:{target.port}: {exc}") from exc.os_error
        except aiohttp.ClientResponseError as exc:  # a status line or header it cannot read
            raise UnreadableAnswer(f"the upstream's answer could not be parsed: {exc}") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:  # dropped before the headers
            raise Dropped(f"the upstream closed the connection without answering: {exc!r}") from exc
        return AiohttpAnswer(response)

    def _tls(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            import httpx  # its CA bundle (certifi's), as the h1 transport's

            self.ssl_context = httpx.create_ssl_context()
        return self.ssl_context

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
