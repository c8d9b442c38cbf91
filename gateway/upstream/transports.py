"""The transports the upstream calls can run on (``GATEWAY_UPSTREAM_TRANSPORT``).

- ``h1`` (the default): gateway/upstream/http1/, the gateway's own HTTP/1.1 transport;
- ``aiohttp``: aiohttp's own client (gateway/upstream/aiohttp_transport.py), imported only when chosen.
"""

from __future__ import annotations

from gateway.upstream.transport import Transport

TRANSPORTS = ("h1", "aiohttp")  # GATEWAY_UPSTREAM_TRANSPORT (gateway/core/settings.py)
DEFAULT_TRANSPORT = "h1"


def build(kind: str, max_connections: int) -> Transport:
    """The transport named ``kind`` (one of :data:`TRANSPORTS`)."""
    from gateway.upstream.client import KEEPALIVE_S, READ_CHUNK_BYTES

    if kind == "h1":
        from gateway.upstream.http1 import H1Transport

        return H1Transport(max_connections, KEEPALIVE_S, read_buffer_bytes=READ_CHUNK_BYTES)
    if kind == "aiohttp":
        from gateway.upstream.aiohttp_transport import AiohttpTransport

        return AiohttpTransport(max_connections, KEEPALIVE_S, read_buffer_bytes=READ_CHUNK_BYTES)
    raise ValueError(f"unknown upstream transport {kind!r}: one of {', '.join(TRANSPORTS)}")
