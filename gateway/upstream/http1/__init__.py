"""A lean HTTP/1.1 client transport for httpx, for the upstream calls (``GATEWAY_UPSTREAM_TRANSPORT=h1``).

- ``transport.py``: :class:`H1Transport`, the ``httpx.AsyncBaseTransport``;
- ``pool.py``: keep-alive connections per origin, bounded, first come first served;
- ``connection.py``: one connection (an asyncio Protocol fed to httptools' parser) and the
  answer it is reading, with flow control.
"""

from gateway.upstream.http1.connection import MAX_HEAD_BYTES, MAX_LINE_BYTES, UnreadableAnswer
from gateway.upstream.http1.pool import PoolClosed
from gateway.upstream.http1.transport import BodyStream, H1Transport

__all__ = ["MAX_HEAD_BYTES", "MAX_LINE_BYTES", "BodyStream", "H1Transport", "PoolClosed", "UnreadableAnswer"]
