"""The gateway's own HTTP/1.1 transport for the upstream calls (gateway/upstream/transport.py's API).

- ``transport.py``: :class:`H1Transport`, one POST and its answer;
- ``pool.py``: keep-alive connections per origin, bounded, first come first served;
- ``connection.py``: one connection (an asyncio Protocol fed to httptools' parser) and the
  answer it is reading, with flow control.
"""

from gateway.upstream.http1.connection import MAX_HEAD_BYTES, MAX_LINE_BYTES, Answer
from gateway.upstream.http1.transport import H1Transport

__all__ = ["MAX_HEAD_BYTES", "MAX_LINE_BYTES", "Answer", "H1Transport"]
