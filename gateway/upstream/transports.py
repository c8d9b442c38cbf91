"""The transports UpstreamClient can run on (``GATEWAY_UPSTREAM_TRANSPORT``), and what their
errors mean: a connection that failed or dropped before an answer, or an answer that came but
cannot be read (which the upstream may bill, so it is reconciled).

- ``h1`` (the default): gateway/http1, the gateway's own HTTP/1.1 transport;
- ``aiohttp``: httpx-aiohttp's transport over aiohttp's connector, imported only when chosen;
- ``httpx``: httpx's own pool.
"""

from __future__ import annotations

import sys

import httpx

from gateway.upstream.http1 import H1Transport, UnreadableAnswer

TRANSPORTS = ("h1", "aiohttp", "httpx")  # GATEWAY_UPSTREAM_TRANSPORT (gateway/core/settings.py)
DEFAULT_TRANSPORT = "h1"
KEEPALIVE_S = 30.0  # an idle upstream connection is closed after this long

# What a transport raises for a connection or protocol failure. aiohttp's own errors are added
# when its transport is chosen (httpx-aiohttp maps most of them to httpx's, not all), so the
# gateway does not import aiohttp otherwise.
TransportErrors = tuple[type[BaseException], ...]
HTTP_ERRORS: TransportErrors = (httpx.TransportError, OSError)


def choose(
    kind: str, max_connections: int, read_chunk_bytes: int
) -> tuple[httpx.AsyncBaseTransport, TransportErrors]:
    """The transport named ``kind`` (one of :data:`TRANSPORTS`) and the errors it may raise."""
    if kind == "h1":
        transport = H1Transport(max_connections, KEEPALIVE_S, read_buffer_bytes=read_chunk_bytes)
        return transport, HTTP_ERRORS
    if kind == "httpx":
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return httpx.AsyncHTTPTransport(limits=limits), HTTP_ERRORS
    if kind != "aiohttp":
        raise ValueError(f"unknown upstream transport {kind!r}: one of {', '.join(TRANSPORTS)}")
    import aiohttp
    from httpx_aiohttp import AiohttpTransport
    from httpx_aiohttp.transport import AiohttpResponseStream

    # A streamed 32 MB answer in httpx-aiohttp's 16 KB pieces is 2,000 trips through the scanner
    # and the server per answer; 256 KB pieces are 128 (what the 20 x 32 MB bench row measures).
    AiohttpResponseStream.CHUNK_SIZE = read_chunk_bytes

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=KEEPALIVE_S)
        # auto_decompress off: the body goes back to the caller byte for byte.
        return aiohttp.ClientSession(
            connector=connector, auto_decompress=False, read_bufsize=read_chunk_bytes
        )

    return AiohttpTransport(client=session), (*HTTP_ERRORS, aiohttp.ClientError)


def is_dropped(exc: BaseException) -> bool:
    """httpx-aiohttp reports a dropped connection as ConnectTimeout; it is not a timeout. (The h1
    transport reports one as ReadError, and httpx's pool as ReadError or RemoteProtocolError.)"""
    aiohttp = sys.modules.get("aiohttp")  # none of its errors exist unless its transport runs
    if aiohttp is None:
        return False
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
        cause, aiohttp.ServerTimeoutError
    )


def unreadable_answer(exc: BaseException) -> bool:
    """An answer that came but cannot be read (a malformed status line or header, a header over
    8 KB, a body cut short): the upstream got the call, so it is a bad response to reconcile, not
    a connection failure. h1 raises :class:`UnreadableAnswer`; aiohttp one of its own."""
    aiohttp = sys.modules.get("aiohttp")
    unreadable: TransportErrors = (UnreadableAnswer,)
    if aiohttp is not None:
        unreadable += (aiohttp.http_exceptions.HttpProcessingError, aiohttp.ClientResponseError)
    seen: BaseException | None = exc
    for _ in range(8):  # a few wrappers deep; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, unreadable):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
