"""The upstream's answer as the client hands it on: :class:`UpstreamReply`.

Its status and headers are in; ``body`` is what has been read of its body (all of it once
``whole``), and :meth:`UpstreamReply.read` reads the rest piece by piece, within the size cap and
the call's deadline. Nothing read through it is kept: each piece is handed on and forgotten, which
is what bounds the memory of a large answer.

A body the upstream compressed because the request allowed it (``gzip`` or ``deflate``: the
generations call says so, as httpx's client did) is decoded here, in bounded pieces, so what
the gateway counts, caps and relays is the JSON itself.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque

from gateway.upstream.transport import Answer, Headers, TransportError, header

PIECE_BYTES = 256 * 1024  # the largest piece a compressed body is decoded into at once


class BodyFailure(Exception):
    """The body could not be read whole. ``reason``: ``too_large`` (past the cap), ``timeout``
    (the call's deadline passed), ``stalled`` (no piece within the wait asked for) or ``broken``
    (dropped, cut short, or undecodable)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Decoder:
    """A ``gzip`` or ``deflate`` body decoded as it arrives, never more than a piece at once."""

    def __init__(self, encoding: str) -> None:
        self.raw_fallback = encoding == "deflate"  # servers send zlib-wrapped or raw deflate
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS)
        self._started = False

    @staticmethod
    def of(headers: Headers) -> Decoder | None:
        encoding = (header(headers, b"content-encoding") or "").strip().lower()
        return Decoder(encoding) if encoding in ("gzip", "x-gzip", "deflate") else None

    def feed(self, data: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        while data:
            try:
                out = self._z.decompress(data, PIECE_BYTES)
            except zlib.error:
                if self._started or not self.raw_fallback:
                    raise
                self.raw_fallback, self._z = False, zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._started = True
            if out:
                pieces.append(out)
            data = self._z.unconsumed_tail
        return pieces

    def end(self) -> bytes:
        if self._started and not self._z.eof:
            raise zlib.error("the compressed body ended early")
        return self._z.flush()


class UpstreamReply:
    """One answer of the upstream, any status; :meth:`aclose` when done with it."""

    __slots__ = ("status", "headers", "latency_s", "body", "whole", "received", "_answer", "_decoder",
                 "_limit", "_deadline", "_pending")  # fmt: skip

    def __init__(
        self, answer: Answer, latency_s: float, limit: int, deadline: float, decode: bool = True
    ) -> None:
        self.status, self.headers = answer.status, answer.headers
        self.latency_s = latency_s
        self.body = b""
        self.whole = False
        self.received = 0  # bytes of body so far (decoded), checked against the cap
        self._answer: Answer | None = answer
        self._decoder = Decoder.of(answer.headers) if decode else None
        self._limit, self._deadline = limit, deadline
        self._pending: deque[bytes] = deque()

    @property
    def deadline(self) -> float:
        """When the call's time is up (the event loop's clock): every wait on this answer ends by then."""
        return self._deadline

    def header(self, name: bytes) -> str | None:
        return header(self.headers, name)

    async def read(self, idle_s: float | None = None) -> bytes:
        """The next piece of the body; b"" at its end. Raises :class:`BodyFailure`."""
        try:
            async with asyncio.timeout_at(self._deadline):
                if idle_s is None:
                    return await self.next_piece()
                try:
                    async with asyncio.timeout(idle_s):
                        return await self.next_piece()
                except TimeoutError:
                    if asyncio.get_running_loop().time() < self._deadline:
                        raise BodyFailure("stalled") from None
                    raise
        except TimeoutError:
            raise BodyFailure("timeout") from None

    async def next_piece(self) -> bytes:
        """:meth:`read` without a deadline of its own, for a caller that bounds the wait."""
        while not self._pending:
            answer = self._answer
            if answer is None:
                return b""
            try:
                data = await answer.read()
                decoder = self._decoder
                if decoder is None:
                    if not data:
                        self._end()
                    return self._counted(data)
                if data:
                    self._pending.extend(piece for piece in decoder.feed(data) if piece)
                else:
                    tail = decoder.end()
                    if tail:
                        self._pending.append(tail)
                    self._end()
            except (TransportError, OSError, zlib.error):
                raise BodyFailure("broken") from None
        return self._counted(self._pending.popleft())

    def _counted(self, data: bytes) -> bytes:
        self.received += len(data)
        if self.received > self._limit:
            raise BodyFailure("too_large")
        return data

    def _end(self) -> None:
        answer, self._answer = self._answer, None
        if answer is not None:
            answer.close()

    async def aclose(self) -> None:
        """Give the connection back, or drop it if the answer was not read to its end."""
        self._pending.clear()
        self._end()
