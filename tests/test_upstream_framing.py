"""How the upstream transport frames an answer, pinned byte for byte (RFC 9112, sections 2, 5, 6, 7).

Each row is what a raw asyncio server sends on a connection after reading a request, and what the
transport must make of it: the body, read whole, and whether the connection may carry the next
call; or an answer it refuses as unreadable (the call is then reconciled: the upstream got it).
Whatever would let two parties disagree on where an answer ends (a request smuggled into the next
answer, or an answer cut where the upstream did not cut it) is refused, never guessed at.

The transport's parser checks most of these; the table is here so that no change of parser, of
its settings or of the code around it can loosen one unnoticed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from gateway.upstream.client import UpstreamClient
from gateway.upstream.failures import UpstreamFailure
from gateway.upstream.http1 import H1Transport
from gateway.upstream.transport import Target, UnreadableAnswer
from tests.raw_http import Peer, RawServer, wait_for

OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"
UNASKED = "switched protocols without being asked"


@dataclass(frozen=True)
class Row:
    id: str
    wire: bytes  # what the server sends for each request
    body: bytes | None  # the body read whole; None: refused as unreadable
    reused: bool = False  # the connection carries the next call
    closes: bool = False  # the server closes the connection after sending (the body's end)
    status: int = 200
    why: str | None = None  # what the refusal says, where the transport itself must know


ROWS = [
    # -- bodies framed by Content-Length, by chunks, by the connection's end
    Row("content-length", OK + b"Content-Length: 2\r\n\r\n{}", b"{}", reused=True),
    Row("content-length-zero", OK + b"Content-Length: 0\r\n\r\n", b"", reused=True),
    Row("chunked", CHUNKED + b"2\r\n{}\r\n0\r\n\r\n", b"{}", reused=True),
    Row("chunked-hex-sizes", CHUNKED + b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", reused=True),
    Row("chunk-extension", CHUNKED + b"2;name=value\r\n{}\r\n0\r\n\r\n", b"{}", reused=True),
    Row("trailers", CHUNKED + b"2\r\n{}\r\n0\r\nX-Checksum: abc\r\n\r\n", b"{}", reused=True),
    Row("chunked-last-of-two-codings", OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n",
        b"xy", reused=True),
    # Chunked but not last: the body ends with the connection (RFC 9112 section 6.3, item 4).
    Row("chunked-not-last", OK + b"Transfer-Encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"2\r\n{}\r\n0\r\n\r\n", closes=True),
    Row("close-delimited", OK + b"Content-Type: application/json\r\n\r\n{\"a\": 1}", b'{"a": 1}',
        closes=True),
    Row("close-delimited-http-1.0", b"HTTP/1.0 200 OK\r\n\r\n{}", b"{}", closes=True),
    Row("http-1.0-with-length", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", b"{}"),
    Row("connection-close", OK + b"Connection: close\r\nContent-Length: 2\r\n\r\n{}", b"{}"),
    # -- answers without a body
    Row("204", b"HTTP/1.1 204 No Content\r\n\r\n", b"", reused=True, status=204),
    Row("304-with-length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", b"", reused=True,
        status=304),
    # -- interim answers: skipped; an upgrade nobody asked for is not HTTP/1.1 any more
    Row("1xx", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        + OK + b"Content-Length: 2\r\n\r\n{}", b"{}", reused=True),
    Row("101-upgrade", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        + OK + b"Content-Length: 2\r\n\r\n{}", None, why=UNASKED),
    Row("101-without-upgrade", b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        + OK + b"Content-Length: 2\r\n\r\n{}", None, why=UNASKED),
    # -- bytes after the answer: the answer stands, the connection is out of step
    Row("bytes-after-content-length", OK + b"Content-Length: 2\r\n\r\n{}" + OK, b"{}"),
    Row("bytes-after-chunked", CHUNKED + b"2\r\n{}\r\n0\r\n\r\n" + OK, b"{}"),
    # -- framing HTTP/1.1 refuses (a smuggling vector, or a length nobody can trust)
    Row("content-length-and-chunked", OK + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n", None),
    Row("two-content-lengths", OK + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", None),
    Row("two-equal-content-lengths", OK + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", None),
    Row("content-length-list", OK + b"Content-Length: 2, 2\r\n\r\n{}", None),
    Row("negative-length", OK + b"Content-Length: -2\r\n\r\n{}", None),
    Row("signed-length", OK + b"Content-Length: +2\r\n\r\n{}", None),
    Row("overflowing-length", OK + b"Content-Length: 18446744073709551618\r\n\r\n{}", None),
    Row("chunk-size-overflow", CHUNKED + b"10000000000000002\r\n{}\r\n0\r\n\r\n", None),
    Row("chunk-size-not-hex", CHUNKED + b"2x\r\n{}\r\n0\r\n\r\n", None),
    Row("obs-fold", OK + b"Content-Length: 2\r\nX-A: 1\r\n folded\r\n\r\n{}", None),
    Row("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}", None),
    Row("bare-lf-in-chunks", CHUNKED + b"2\n{}\n0\n\n", None),
    Row("space-before-colon", OK + b"Content-Length : 2\r\n\r\n{}", None),
    # -- bodies cut short
    Row("content-length-cut-short", OK + b"Content-Length: 10\r\n\r\n{}", None, closes=True),
    Row("chunked-cut-short", CHUNKED + b"2\r\n{}\r\n", None, closes=True),
]


def serving(row: Row, sent: list[int]) -> object:
    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(row.wire)
            sent.append(1)
            if row.closes:
                return

    return script


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_an_answer_is_framed_as_http_1_1_says(row: Row) -> None:
    async def call(transport: H1Transport, url: str) -> tuple[int, bytes]:
        answer = await transport.post(Target.of(url, []), b"{}", 5.0)
        try:
            body = b""
            while piece := await answer.read():
                body += piece
            return answer.status, body
        finally:
            answer.close()

    async def main() -> None:
        sent: list[int] = []
        async with RawServer(serving(row, sent)) as server:  # type: ignore[arg-type]
            transport = H1Transport(4)
            try:
                if row.body is None:
                    with pytest.raises(UnreadableAnswer, match=row.why):
                        await call(transport, server.url())
                    await wait_for(lambda: server.open == 0, "a connection out of step is never kept")
                    return
                for _ in range(2):
                    assert await call(transport, server.url()) == (row.status, row.body)
                kept = "the connection was not reused" if row.reused else "the connection was reused"
                assert server.accepts == (1 if row.reused else 2), kept
            finally:
                await transport.aclose()
            if row.body is None:
                client = UpstreamClient(server.url(), "sk-test", 5.0, transport=H1Transport(4))
                with pytest.raises(UpstreamFailure) as failure:
                    await client.generate(b"{}")
                await client.aclose()
                assert (failure.value.reason, failure.value.reconcile) == ("bad_response", True)

    asyncio.run(asyncio.wait_for(main(), 20))
