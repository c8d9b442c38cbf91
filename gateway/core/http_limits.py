"""A bound on the request line plus headers, which uvicorn's httptools protocol does not have.

httptools (llhttp) buffers a header that is still arriving without limit, so one huge header grew
a worker's memory by its whole size, and parsing it stalled every other request of that worker.
:class:`BoundedHttpToolsProtocol` counts the bytes received while a request's headers are not
complete; past GATEWAY_MAX_HEADER_BYTES (64 KiB by default: more than any honest client sends,
in line with common proxies) it answers 431 in the OpenAI envelope and closes the connection.
It counts raw bytes in :meth:`data_received` rather than in the parser's ``on_header`` callback,
because llhttp calls that only once a whole header has been buffered.

Memory stays within the bound plus one read (the event loop reads at most 256 KiB at a time).
Passed to uvicorn as ``http=BoundedHttpToolsProtocol``; the bound is read from the environment
(each worker is a fresh process, see gateway/app.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.core import errors

log = logging.getLogger("gateway")

DEFAULT_MAX_HEADER_BYTES = 64 * 1024


def max_header_bytes() -> int:
    """GATEWAY_MAX_HEADER_BYTES, as validated by gateway/core/settings.py at start-up."""
    raw = os.environ.get("GATEWAY_MAX_HEADER_BYTES", "")
    return int(raw) if raw.strip().isdigit() else DEFAULT_MAX_HEADER_BYTES


def header_too_large(limit: int) -> bytes:
    """The whole 431 answer, written straight to the transport: no ASGI cycle exists yet."""
    error = errors.GatewayError(
        431,
        f"The request line and headers are larger than {limit} bytes.",
        "invalid_request_error",
        "request_header_fields_too_large",
        None,
        False,
    )
    body = error.body()
    head = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"x-should-retry: false\r\n"
        b"connection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on the bytes before a request's body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes = max_header_bytes()
        self.awaiting_headers = True  # a connection starts with a request's headers
        self.raw_bytes = 0  # bytes read while this request's head was incomplete
        self.head_bytes = 0  # url + header names and values parsed so far: the exact size
        self.refused = False

    def data_received(self, data: bytes) -> None:
        """Feed the parser; refuse once a head still arriving has grown past the bound.

        Two counts: the raw bytes read while the head is incomplete (what llhttp buffers before
        it calls back), and the exact size of the parts the callbacks saw (a whole oversized
        head that arrived in one read).
        """
        if self.refused:
            return
        counted = self.awaiting_headers
        if counted:
            self.raw_bytes += len(data)
        super().data_received(data)
        if counted and self.awaiting_headers and self.raw_bytes > self.max_header_bytes:
            self.refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.awaiting_headers, self.head_bytes = True, 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting_headers, self.raw_bytes = True, 0  # a keep-alive connection's next request

    def send_400_response(self, msg: str) -> None:
        if not self.refused:  # after a refusal the parser's error is ours: the 431 is sent
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.max_header_bytes:
            self.refuse()
            raise HeadTooLarge

    def refuse(self) -> None:
        """Answer 431 and close; the parser and its buffer are dropped with the connection."""
        if self.refused:
            return
        self.refused = True
        client = "%s:%d" % self.client if self.client else "unknown"
        log.warning("refused request headers over %d bytes from %s", self.max_header_bytes, client)
        transport: asyncio.Transport = self.transport
        if not transport.is_closing():
            transport.write(header_too_large(self.max_header_bytes))
            transport.close()
