"""The upstream transports the transport tests run against, built alike, and what one of them
is known not to do."""

from __future__ import annotations

import ssl

import pytest

from gateway.upstream.aiohttp_transport import AiohttpTransport
from gateway.upstream.http1 import MAX_HEAD_BYTES, H1Transport
from gateway.upstream.transport import Transport

TRANSPORTS = ["h1", "aiohttp"]

__all__ = ["MAX_HEAD_BYTES", "TRANSPORTS", "known_gap", "make_transport"]

# Cases a transport fails, found by these tests: expected to fail (strictly: a gap that closes
# shows up as well), so that the two transports are compared on the same tests.
REUSES_OUT_OF_STEP = "aiohttp keeps, and reuses, a connection that brought bytes after the answer"
LENIENT = "aiohttp parses the upstream's answers leniently (llhttp's lenient flags)"
GAPS = {
    ("aiohttp", "bytes-after"): REUSES_OUT_OF_STEP,
    ("aiohttp", "bytes-after-content-length"): REUSES_OUT_OF_STEP,
    ("aiohttp", "bytes-after-chunked"): REUSES_OUT_OF_STEP,
    ("aiohttp", "80-kb-of-headers"): "aiohttp bounds each header field and their number, not the section",
    ("aiohttp", "101-upgrade"): "aiohttp hands a 101 on as the answer",
    ("aiohttp", "101-without-upgrade"): "aiohttp hands a 101 on as the answer",
    ("aiohttp", "obs-fold"): LENIENT,
    ("aiohttp", "bare-lf"): LENIENT,
    ("aiohttp", "space-before-colon"): LENIENT,
}


def known_gap(request: pytest.FixtureRequest, kind: str, case: str) -> None:
    why = GAPS.get((kind, case))
    if why is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=why))


def make_transport(
    kind: str,
    max_connections: int = 4,
    keepalive_s: float = 30.0,
    read_buffer_bytes: int = 256 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> Transport:
    if kind == "h1":
        return H1Transport(max_connections, keepalive_s, read_buffer_bytes, ssl_context)
    if kind == "aiohttp":
        return AiohttpTransport(max_connections, keepalive_s, read_buffer_bytes, ssl_context)
    raise ValueError(kind)
