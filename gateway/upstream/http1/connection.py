"""One HTTP/1.1 connection: an asyncio Protocol whose bytes go to httptools' response parser.

A :class:`Connection` carries one exchange at a time. :meth:`Connection.send` writes the whole
request (one ``transport.write``) and returns the :class:`Answer` the parser fills: its status
and headers (``head`` resolves once they are in) and its body, kept as the pieces the socket
delivered until the caller reads them.

Flow control: when more than ``high_water`` bytes of body wait unread, the connection stops
reading from the socket (the kernel's buffers fill and the upstream's writes block) until the
caller has taken them. So a large answer costs at most about ``high_water`` plus one socket read
here, however fast the upstream sends and however slowly the caller reads.

A body whose length the headers give (``Content-Length``, the usual answer) skips the parser
after the socket read that completed the headers: each later read is the body itself, kept as the
very ``bytes`` object the event loop delivered, where the parser would hand over a copy of every
piece of a body that may be hundreds of MB. Chunked and close-delimited bodies go through the
parser throughout.

Limits: a status line or header field over :data:`MAX_LINE_BYTES` (aiohttp's 8 KB), or a header
section over :data:`MAX_HEAD_BYTES`, is an unreadable answer, like one the parser refuses.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools

from gateway.upstream.transport import Dropped, Headers, UnreadableAnswer

MAX_LINE_BYTES = 8190  # a status line or one header field: aiohttp's limit
MAX_HEAD_BYTES = 64 * 1024  # the whole header section
NO_BODY = frozenset({204, 304})
# Unread pieces up to this much in all are read as one; above it, one piece per read: joining
# large socket reads would copy every byte of a large answer once more, for a caller that
# handles one piece at a time anyway.
JOIN_BELOW = 64 * 1024


def dropped(exc: BaseException | None) -> Dropped:
    """The connection ended before an answer's headers were in: nothing was answered."""
    why = f": {exc}" if exc is not None else ""
    error = Dropped(f"the upstream closed the connection without answering{why}")
    error.__cause__ = exc
    return error


class Answer:
    """One response as it arrives: the parser's callbacks fill it, the caller reads its body."""

    __slots__ = (
        "conn",
        "parser",
        "head",
        "status",
        "reason",
        "headers",
        "head_bytes",
        "head_fed",
        "headers_done",
        "informational",
        "complete",
        "keep_alive",
        "chunks",
        "buffered",
        "peak_buffered",
        "error",
        "waiter",
        "high_water",
        "body_left",
        "close_delimited",
    )

    def __init__(self, conn: Connection, high_water: int) -> None:
        self.conn: Connection | None = conn  # None once the answer has ended either way
        self.parser = httptools.HttpResponseParser(self)
        self.head: asyncio.Future[None] = conn.loop.create_future()
        self.status = 0
        self.reason = b""
        self.headers: Headers = []
        self.head_bytes = 0  # header fields received, counted as on the wire
        self.head_fed = 0  # bytes fed while the header section was still incomplete
        self.headers_done = self.informational = self.complete = self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.peak_buffered = 0  # the most body ever held unread (tests read it)
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.high_water = high_water
        self.body_left = -1  # bytes of a Content-Length body still to come; -1: the parser counts
        self.close_delimited = False  # the body ends with the connection (set with the headers)

    # -- httptools callbacks (called inside feed_data) ------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: the connection is out of step
            raise UnreadableAnswer("the upstream sent more after its answer")

    def on_status(self, status: bytes) -> None:
        self.reason += status
        if len(self.reason) > MAX_LINE_BYTES:
            raise self._refuse(f"a status line over {MAX_LINE_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        if size > MAX_LINE_BYTES:
            raise self._refuse(f"a header field of {size + 2} bytes (at most {MAX_LINE_BYTES})")
        self.head_bytes += size + 4
        if self.head_bytes > MAX_HEAD_BYTES:
            raise self._refuse(f"a header section over {MAX_HEAD_BYTES} bytes")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:  # what follows is another protocol, which this call never asked for
            raise self._refuse("switched protocols without being asked (status 101)")
        if 100 <= status < 200:  # "100 Continue", "103 Early Hints": the answer proper follows
            self.informational = True
            self.reason, self.headers = b"", []
            return
        self.status, self.headers_done = status, True
        self.reason = self.reason.strip()
        if status not in NO_BODY:
            self._framing()
        if not self.head.done():
            self.head.set_result(None)

    def _framing(self) -> None:
        """How the body ends, from the headers (the parser has checked them): at Content-Length
        (``body_left``, and the parser is skipped for it), with the last chunk, or with the
        connection (``close_delimited``). Chunked framing holds only when chunked is the last
        transfer coding; otherwise the body ends with the connection (RFC 9112, section 6.3)."""
        length, encoded, chunked = -1, False, False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":  # the last coding of the last field counts
                encoded, chunked = True, value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        self.close_delimited = length < 0 and not chunked
        if length >= 0 and not encoded:
            self.body_left = length
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.body_left > 0:
            self.body_left -= len(body)
        self.take(body)

    def take(self, body: bytes) -> None:
        """A piece of the body: held for the caller, reading paused past ``high_water``."""
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.peak_buffered:
            self.peak_buffered = self.buffered
        if self.buffered > self.high_water and self.conn is not None:
            self.conn.pause()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def _refuse(self, what: str) -> UnreadableAnswer:
        self.error = UnreadableAnswer(f"the upstream's answer has {what}")
        return self.error

    # -- the end, however it comes -------------------------------------------------------------

    def ended_by_close(self, exc: BaseException | None) -> None:
        """The connection closed: the end of a body delimited by it, else a failure."""
        if self.complete or self.error is not None:
            return
        if self.headers_done and exc is None and self.close_delimited:
            self.complete = True
            self._wake()
            return
        if self.headers_done:
            error: BaseException = UnreadableAnswer("the connection closed before the answer's end")
            error.__cause__ = exc
            self.fail(error)
        else:
            self.fail(dropped(exc))

    def fail(self, error: BaseException) -> None:
        if self.complete:
            return
        self.error = error
        self.conn = None
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a caller may have stopped waiting for it
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the caller's side ---------------------------------------------------------------------

    async def read(self) -> bytes:
        """The body received and not yet read (all of it, or its first piece if that is large);
        b"" at its end; raises if it broke off."""
        while not self.chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            conn = self.conn
            assert conn is not None
            self.waiter = conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        chunks = self.chunks
        if len(chunks) == 1 or self.buffered <= JOIN_BELOW:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.chunks, self.buffered = [], 0
        else:  # large pieces go one by one: joining them cost more than the rest of the read
            data = chunks.pop(0)
            self.buffered -= len(data)
        conn = self.conn
        if conn is not None and conn.paused and self.buffered <= self.high_water:
            conn.resume()
        return data

    def close(self) -> None:
        """The caller is done with this answer: if it has not ended, its connection cannot be
        used again (the rest of the answer would come first), so it is closed."""
        self.chunks, self.buffered = [], 0
        conn = self.conn
        if conn is not None and not self.complete:
            self.conn = None
            conn.abort()


class Owner(Protocol):
    """What a connection tells its pool (gateway/upstream/http1/pool.py), named here so that the pool
    imports the connection and not the other way round."""

    def release(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """A connection of the pool, to one origin; ``counted`` while it holds a slot of the pool."""

    def __init__(self, pool: Owner, origin: tuple[str, str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.origin, self.loop = pool, origin, loop
        self.transport: asyncio.Transport | None = None
        self.answer: Answer | None = None
        self.lost = self.paused = False
        self.counted = False  # holds a slot of the pool (set once it is open)
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def usable(self) -> bool:
        transport = self.transport
        return not self.lost and transport is not None and not transport.is_closing()

    def send(self, payload: bytes, high_water: int) -> Answer:
        assert self.transport is not None and self.answer is None
        self.answer = answer = Answer(self, high_water)
        self.transport.write(payload)
        return answer

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # bytes nobody asked for: the connection is out of step, drop it
            self.abort()
            return
        if answer.body_left > 0 and answer.headers_done:
            self._body_received(answer, data)
            return
        try:
            answer.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            error = answer.error  # a limit of ours, raised from a callback
            if error is None:
                error = UnreadableAnswer(f"the upstream's answer could not be parsed: {exc}")
                error.__cause__ = exc
            self._fail(answer, error)
            return
        if not answer.headers_done:
            answer.head_fed += len(data)
            if answer.head_fed > MAX_HEAD_BYTES:
                self._fail(answer, answer._refuse(f"a header section over {MAX_HEAD_BYTES} bytes"))
        elif answer.complete:
            self._finish(answer)

    def _body_received(self, answer: Answer, data: bytes) -> None:
        """A read of a Content-Length body, taken as it came (the parser is not told)."""
        left = answer.body_left
        if len(data) < left:
            answer.body_left = left - len(data)
            answer.take(data)
            return
        answer.body_left = 0
        answer.take(data if len(data) == left else data[:left])
        answer.complete = True
        answer._wake()
        if len(data) > left:  # more after the whole answer: out of step, not reusable
            self.answer, answer.conn = None, None
            self.abort()
        else:
            self._finish(answer)

    def _fail(self, answer: Answer, error: BaseException) -> None:
        answer.fail(error)
        self.abort()

    def _finish(self, answer: Answer) -> None:
        """The answer is whole: its unread body stays with it, and the connection is free."""
        self.answer, answer.conn = None, None
        if self.paused:
            self.resume()
        transport = self.transport
        if answer.keep_alive and transport is not None and not transport.get_write_buffer_size():
            self.pool.release(self)
        else:  # "connection: close", HTTP/1.0, or answered before the request was all sent
            self.close()

    def eof_received(self) -> bool:
        answer = self.answer
        if answer is not None:
            answer.ended_by_close(None)
            if answer.complete:
                self.answer, answer.conn = None, None
        return False  # the transport closes itself: a half-closed connection is not reusable

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        answer, self.answer = self.answer, None
        if answer is not None:
            answer.ended_by_close(exc)
            answer.conn = None
        self.pool.forget(self)

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def close(self) -> None:
        """Close politely (an idle or finished connection); its slot is free at once."""
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)

    def abort(self) -> None:
        """Drop at once (a half-read or broken exchange); its slot is free at once."""
        if self.transport is not None:
            self.transport.abort()
        self.pool.forget(self)
