"""The upstream transport (gateway/upstream/http1/) against real servers written here
(tests/raw_http.py: asyncio streams sending exactly the bytes each test needs), on asyncio's
loop and on uvloop (the gateway's).
Failures are checked twice: as the transport raises them, and as UpstreamClient classifies them
(502 upstream_unavailable, bad_response to reconcile, 504), since that classification is what a
caller and the ledger see. What the transport keeps is checked from the server's side: the
connections it accepted and the ones still open.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import ssl
import subprocess
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gateway.upstream import descriptors
from gateway.upstream.client import UpstreamClient
from gateway.upstream.failures import UpstreamFailure
from gateway.upstream.http1 import MAX_HEAD_BYTES, H1Transport
from gateway.upstream.transport import (
    Answer,
    ConnectFailed,
    Dropped,
    Target,
    UnreadableAnswer,
)
from tests.raw_http import Peer, RawServer, answer, keep_answering, wait_for

MiB = 1024 * 1024
READ_BUFFER = 256 * 1024
HEADERS = [("Content-Type", "application/json")]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a test's coroutine to its end on the parametrised loop, within 30 s."""

    async def bounded(coroutine: Coroutine[Any, Any, Any]) -> Any:
        async with asyncio.timeout(30):
            return await coroutine

    def runner(coroutine: Coroutine[Any, Any, Any]) -> Any:
        if request.param == "uvloop":
            return uvloop.run(bounded(coroutine))
        return asyncio.run(bounded(coroutine))

    return runner


def target(url: str) -> Target:
    return Target.of(url, HEADERS)


async def read_all(answer: Answer) -> bytes:
    body = b""
    while piece := await answer.read():
        body += piece
    answer.close()
    return body


async def fetch(transport: H1Transport, url: str, body: bytes = b'{"n": 1}') -> tuple[Answer, bytes]:
    """The answer to one POST, and its whole body."""
    answer = await transport.post(target(url), body, 10.0)
    return answer, await read_all(answer)


async def content(transport: H1Transport, url: str, body: bytes = b'{"n": 1}') -> bytes:
    return (await fetch(transport, url, body))[1]


async def classify(server: RawServer, timeout_s: float = 5.0) -> UpstreamFailure:
    """What UpstreamClient makes of the server's answer (it must fail)."""
    client = UpstreamClient(server.url(), "sk-test", timeout_s, 1.0, transport=H1Transport(4))
    try:
        with pytest.raises(UpstreamFailure) as failure:
            await client.generate(b'{"model": "m"}')
        return failure.value
    finally:
        await client.aclose()


def answer_once(data: bytes, then_close: bool = True) -> Callable[[Peer], Coroutine[Any, Any, None]]:
    async def script(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(data)
            if not then_close:
                await peer.closed_by_client()

    return script


# -- bodies ---------------------------------------------------------------------------------------


def test_a_content_length_answer_and_the_request_as_sent(run: Any) -> None:
    async def main() -> None:
        async with RawServer(keep_answering) as server:
            transport = H1Transport(4)
            got, body = await fetch(transport, server.url(), '{"prompt": "é"}'.encode())
            assert got.status == 200
            assert dict(got.headers)[b"Content-Type"] == b"application/json"
            assert body == b'{"echo": {"prompt": "\xc3\xa9"}}'
            (request,) = server.requests
            assert request.request_line == b"POST /v1/images/generations HTTP/1.1"
            assert request.header(b"host") == b"127.0.0.1:%d" % server.port
            assert request.header(b"content-length") == b"%d" % len(request.body)
            assert request.header(b"content-type") == b"application/json"
            await transport.aclose()

    run(main())


def test_a_chunked_answer_arrives_whole_and_leaves_its_connection_reusable(run: Any) -> None:
    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b'{"data": ', b"[1, 2, 3]", b"}"):
                await peer.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            await peer.send(b"0\r\n\r\n")

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            for _ in range(2):
                assert await content(transport, server.url()) == b'{"data": [1, 2, 3]}'
            assert server.accepts == 1
            await transport.aclose()

    run(main())


def test_a_close_delimited_answer_ends_with_the_connection_which_is_not_reused(run: Any) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        await peer.send(b'{"data": ')
        await peer.send(b"[]}")  # then the server closes: that is the body's end

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            assert await content(transport, server.url()) == b'{"data": []}'
            assert await content(transport, server.url()) == b'{"data": []}'
            assert server.accepts == 2
            await transport.aclose()

    run(main())


@pytest.mark.parametrize("ending", [b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b"HTTP/1.0 200 OK\r\n"])
def test_an_answer_that_ends_the_connection_is_not_kept(run: Any, ending: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(ending + b"Content-Length: 2\r\n\r\n{}")
        await peer.closed_by_client()  # the client closes it, having read the whole answer

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            for _ in range(2):
                assert await content(transport, server.url()) == b"{}"
            assert server.accepts == 2
            await wait_for(lambda: server.open == 0, "both connections closed")
            await transport.aclose()

    run(main())


@pytest.mark.parametrize("after", [b"", b"HTTP/1.1 200 OK\r\n"], ids=["reused", "bytes-after"])
def test_a_content_length_body_over_several_reads_is_whole_and_exact(run: Any, after: bytes) -> None:
    """The body after the read that completed the headers may be taken without the parser: it
    must still end exactly at Content-Length, keep the connection when nothing follows, and drop
    it when more bytes than the body came."""
    body = bytes(range(256)) * 400  # 100 KB
    took_first: list[asyncio.Event] = []

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            took_first.append(asyncio.Event())
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
            await took_first[-1].wait()  # the client has read those: the rest is a later read
            await peer.send(body[10:60_000])
            await peer.send(body[60_000:] + after)

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            for _ in range(2):
                got = await transport.post(target(server.url()), b"{}", 10.0)
                first = await got.read()
                took_first[-1].set()
                assert first + await read_all(got) == body
                if after:
                    await wait_for(lambda: server.open == 0, "the connection out of step closed")
            assert server.accepts == (1 if not after else 2)
            await transport.aclose()

    run(main())


def test_bytes_after_a_whole_answer_keep_the_answer_but_drop_the_connection(run: Any) -> None:
    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(answer(b"{}") + answer(b'{"extra": 1}'))  # two answers to one request

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            for _ in range(2):
                assert await content(transport, server.url()) == b"{}"
                await wait_for(lambda: server.open == 0, "the connection out of step closed")
            assert server.accepts == 2
            await transport.aclose()

    run(main())


# -- the pool -------------------------------------------------------------------------------------


def test_keep_alive_serves_the_next_requests_on_the_same_connection(run: Any) -> None:
    async def main() -> None:
        async with RawServer(keep_answering) as server:
            transport = H1Transport(4)
            for n in range(3):
                assert await content(transport, server.url(), b"%d" % n) == b'{"echo": %d}' % n
            assert server.accepts == 1 and server.open == 1
            await transport.aclose()
            await wait_for(lambda: server.open == 0, "the idle connection closed by aclose")

    run(main())


def test_an_idle_connection_the_server_closed_is_not_reused(run: Any) -> None:
    closed = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"{}"))  # keep-alive by its headers, then closed by the server
        peer.writer.close()
        await peer.writer.wait_closed()
        closed.set()

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            assert (await fetch(transport, server.url()))[0].status == 200
            await closed.wait()
            await asyncio.sleep(0)  # the client's loop sees the end of the stream it was told of
            assert (await fetch(transport, server.url()))[0].status == 200  # a fresh one, no error
            assert server.accepts == 2
            await transport.aclose()

    run(main())


def test_idle_connections_are_closed_after_the_keepalive_time(run: Any) -> None:
    async def main() -> None:
        async with RawServer(keep_answering) as server:
            transport = H1Transport(4, keepalive_s=0.2)
            await asyncio.gather(*(fetch(transport, server.url()) for _ in range(3)))
            assert server.open == 3
            await wait_for(lambda: server.open == 0, "the server saw every idle connection closed")
            assert await content(transport, server.url(), b"1") == b'{"echo": 1}'
            assert server.accepts == 4
            await transport.aclose()

    run(main())


def test_n_plus_one_calls_share_n_connections_first_come_first_served(run: Any) -> None:
    release = asyncio.Event()

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await release.wait()  # every connection holds its first answer until the test says
            await peer.send(answer(request.body))

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(2)
            calls = []
            for n in range(5):
                calls.append(asyncio.create_task(content(transport, server.url(), b"%d" % n)))
                await asyncio.sleep(0)  # each call asks in turn, in the order made
            await wait_for(lambda: len(server.requests) == 2, "two requests in")
            assert server.accepts == 2
            release.set()
            assert await asyncio.gather(*calls) == [b"0", b"1", b"2", b"3", b"4"]
            assert server.accepts == 2 and server.peak_open == 2
            assert [r.body for r in server.requests[2:]] == [b"2", b"3", b"4"]  # in the order they came
            await transport.aclose()

    run(main())


def test_a_caller_that_gives_up_waiting_frees_its_turn(run: Any) -> None:
    release = asyncio.Event()

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await release.wait()
            await peer.send(answer(request.body))

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(1)
            first = asyncio.create_task(content(transport, server.url(), b"1"))
            await wait_for(lambda: len(server.requests) == 1, "the first request in")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await fetch(transport, server.url(), b"2")  # waits for the one connection
            release.set()
            assert await first == b"1"
            assert await content(transport, server.url(), b"3") == b"3"
            assert server.accepts == 1 and [r.body for r in server.requests] == [b"1", b"3"]
            await transport.aclose()

    run(main())


# -- answers that cannot be read ------------------------------------------------------------------


def junk_header_section() -> list[bytes]:
    return [
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20_000 + b"\r\nContent-Length: 2\r\n\r\n{}",  # one line
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"a" * 1000) for n in range(80)) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (MAX_HEAD_BYTES + 10),  # never ends: not waited for
    ]


UNPARSABLE = {
    "status-line": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}",
    "not-http": b"<html>oops</html>\r\n\r\n",
    **dict(zip(["20-kb-header", "80-kb-of-headers", "endless-header"], junk_header_section(), strict=True)),
}


@pytest.mark.parametrize("case", UNPARSABLE)
def test_an_answer_that_cannot_be_parsed_is_unreadable_and_reconciled(run: Any, case: str) -> None:
    data = UNPARSABLE[case]

    async def main() -> None:
        script = answer_once(data, then_close=False)
        async with RawServer(script) as server:
            transport = H1Transport(4)
            with pytest.raises(UnreadableAnswer):
                await fetch(transport, server.url())
            await wait_for(lambda: server.open == 0, "a connection out of step is never kept")
            await transport.aclose()
            failure = await classify(server)
            assert (failure.reason, failure.reconcile, failure.error.code) == (
                "bad_response",
                True,
                "upstream_bad_response",
            )

    run(main())


def test_a_connection_dropped_before_any_answer_is_unavailable_not_unreadable_and_reconciled(
    run: Any,
) -> None:
    """The request was read before the connection closed: the upstream may have generated (and
    billed) it, so the call is reconciled and never sent to another channel."""

    async def script(peer: Peer) -> None:
        await peer.request()  # then closed, nothing said

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            with pytest.raises(Dropped):
                await fetch(transport, server.url())
            await transport.aclose()
            failure = await classify(server)
            assert (failure.reason, failure.reconcile, failure.sent, failure.error.code) == (
                "connect",
                True,
                True,
                "upstream_unavailable",
            )
            assert failure.error.status == 502 and failure.error.retry

    run(main())


def test_a_connection_dropped_mid_body_is_an_unreadable_answer(run: Any) -> None:
    async def main() -> None:
        script = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
        async with RawServer(script) as server:
            transport = H1Transport(4)
            got = await transport.post(target(server.url()), b"{}", 10.0)
            assert got.status == 200
            with pytest.raises(UnreadableAnswer):
                await read_all(got)
            await transport.aclose()
            failure = await classify(server)
            assert (failure.reason, failure.reconcile) == ("bad_response", True)

    run(main())


def test_an_answer_abandoned_mid_body_closes_its_connection(run: Any) -> None:
    seen_closed: list[bool] = []

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
            seen_closed.append(await peer.closed_by_client())

    async def main() -> None:
        async with RawServer(script) as server:
            transport = H1Transport(4)
            got = await transport.post(target(server.url()), b"{}", 10.0)
            assert len(await got.read()) == 1000
            got.close()
            await wait_for(lambda: seen_closed == [True], "the server saw the connection closed")
            got = await transport.post(target(server.url()), b"{}", 10.0)  # a new connection
            assert server.accepts == 2
            got.close()
            await transport.aclose()

    run(main())


# -- flow control ---------------------------------------------------------------------------------


class Flood(asyncio.Protocol):
    """Answers one request with ``size`` bytes, writing only while its transport accepts more."""

    def __init__(self, size: int) -> None:
        self.left, self.pauses, self.paused = size, 0, False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data and self.transport is not None:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.left)
            self._push()

    def _push(self) -> None:
        while self.left and not self.paused and self.transport is not None:
            piece = min(self.left, READ_BUFFER)
            self.transport.write(b"A" * piece)
            self.left -= piece

    def pause_writing(self) -> None:
        self.paused, self.pauses = True, self.pauses + 1

    def resume_writing(self) -> None:
        self.paused = False
        self._push()


def test_a_large_body_read_slowly_is_held_within_the_read_buffer(run: Any) -> None:
    """The slowest reader: a piece is taken only once the server's writes are blocked (the
    client stopped reading), and the memory the client's process allocated meanwhile is
    measured: the read buffer and a few socket reads (a sixteenth of the answer), never the
    32 MiB."""
    size = 32 * MiB

    async def main() -> None:
        flood = Flood(size)
        server = await asyncio.get_running_loop().create_server(lambda: flood, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = H1Transport(4, read_buffer_bytes=READ_BUFFER)
        got = await transport.post(target(f"http://127.0.0.1:{port}/"), b"{}", 10.0)
        received, pieces = 0, 0
        tracemalloc.start()
        try:
            while True:
                await wait_for(lambda: flood.paused or not flood.left, "the server's writes blocked")
                chunk = await got.read()
                if not chunk:
                    break
                received, pieces = received + len(chunk), pieces + 1
                del chunk
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received == size and pieces >= size // (4 * READ_BUFFER)
        assert peak <= 8 * READ_BUFFER, f"{peak:,} bytes held while reading"
        assert flood.pauses > 0  # the server's writes were held back: the kernel buffers filled
        got.close()
        await transport.aclose()
        server.close()

    run(main())


# -- connecting -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (openssl's command line), and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_sni_against_a_self_signed_certificate(run: Any, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    names: list[str | None] = []
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda sock, name, context: names.append(name)  # type: ignore[assignment,func-returns-value]

    async def main() -> None:
        async with RawServer(keep_answering, tls=tls) as server:
            trusting = H1Transport(4, ssl_context=ssl.create_default_context(cafile=str(cert)))
            for n in range(2):
                assert await content(trusting, server.url(host="localhost"), b"%d" % n) == b'{"echo": %d}' % n
            assert server.accepts == 1 and names == ["localhost"]  # one handshake, SNI = host
            await trusting.aclose()
            default = H1Transport(4)  # certifi's CAs: the certificate is refused
            with pytest.raises(ConnectFailed) as refused:
                await fetch(default, server.url(host="localhost"))
            assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
            await default.aclose()

    run(main())


def test_a_refused_connection_is_unavailable(run: Any) -> None:
    async def main() -> None:
        async with RawServer(keep_answering) as server:
            url = server.url()
        transport = H1Transport(4)
        with pytest.raises(ConnectFailed) as refused:
            await fetch(transport, url)
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)
        await transport.aclose()
        failure = await classify(server)
        assert (failure.reason, failure.error.code) == ("connect", "upstream_unavailable")
        assert (failure.sent, failure.reconcile) == (False, False), (
            "nothing sent: another channel may be tried"
        )

    run(main())


def test_out_of_descriptors_is_recognised_so_the_call_can_wait(run: Any) -> None:
    async def main() -> None:
        async with RawServer(keep_answering) as server:
            transport = H1Transport(4)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            held: list[int] = []
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
            try:
                try:
                    while True:  # take every descriptor left under the lowered limit
                        held.append(os.dup(0))
                except OSError as exc:
                    assert exc.errno == errno.EMFILE
                with pytest.raises(ConnectFailed) as exhausted:
                    await fetch(transport, server.url())
            finally:
                for fd in held:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert descriptors.exhausted(exhausted.value)
            assert (await fetch(transport, server.url()))[0].status == 200
            assert server.accepts == 1
            await transport.aclose()

    run(main())


def test_read_deadlines_are_the_callers_and_leave_no_connection_behind(run: Any) -> None:
    """The transport has no read timeout: UpstreamClient's deadline ends the call (504), and the
    connection it was using is closed, not returned half-read."""
    hung = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        hung.set()
        await peer.closed_by_client()

    async def main() -> None:
        async with RawServer(script) as server:
            client = UpstreamClient(server.url(), "sk-test", 0.3, 1.0, transport=H1Transport(4))
            with pytest.raises(UpstreamFailure) as failure:
                await client.generate(b"{}")
            assert hung.is_set() and (failure.value.reason, failure.value.error.status) == ("timeout", 504)
            await wait_for(lambda: server.open == 0, "the server saw the connection closed")
            await client.aclose()

    run(main())


def test_a_header_with_a_line_break_is_never_sent() -> None:
    for name, value in [("x-a", "1\r\nx-b: 2"), ("x-a", "1\nx"), ("x-a\r\nx-b", "2"), ("x-a", "1\x00")]:
        with pytest.raises(ValueError):
            Target.of("http://127.0.0.1:1/", [(name, value)])
    with pytest.raises(ValueError):
        UpstreamClient("http://127.0.0.1:1/", "sk-test\r\nX-Injected: 1", 1.0)


@pytest.mark.parametrize(
    ("url", "host", "path"),
    [
        ("https://gogogotoken.com/v1/images/generations", b"gogogotoken.com", b"/v1/images/generations"),
        ("http://Upstream.Example:8080/v1/x?y=1", b"upstream.example:8080", b"/v1/x?y=1"),
        ("http://[::1]:9000/v1", b"[::1]:9000", b"/v1"),
        ("https://bücher.example:443/", b"xn--bcher-kva.example", b"/"),
    ],
)
def test_the_request_line_and_host_are_built_from_the_url_once(url: str, host: bytes, path: bytes) -> None:
    built = Target.of(url, HEADERS)
    assert built.head == b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n" % (path, host)
    assert built.request(b"{}").endswith(b"Content-Length: 2\r\n\r\n{}")
    with pytest.raises(ValueError):
        Target.of("ftp://example.com/", HEADERS)
