"""Event streams from an upstream that is not to be trusted: their size, their pace, their line ends.

A ``"stream": true`` call relays the upstream's server-sent events. What such a relay must hold
against a hostile upstream: the answer-size cap (a stream past it is cut, charged for the images
delivered before the cut, recorded for reconciliation); work linear in the bytes relayed, however
large one event is; memory bounded when the caller does not read (the gateway stops reading the
upstream instead: backpressure); and every line end the standard allows (CRLF, LF or CR alone).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.measure import Watch, gateway_rss
from tests.scripted_upstream import ScriptedUpstream, gateway_of, record_when_written
from tests.support import MODEL, MODEL_PRICE_MICROS, TLS, Gateway, RedisServer, wait_until

MiB = 1024 * 1024
CAP = 10 * MiB
SUCCEEDED = "image_generation.partial_succeeded"
COMPLETED = "image_generation.completed"


@pytest.fixture(scope="module")
def capped(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway whose upstream answers may not pass 10 MiB."""
    directory = tmp_path_factory.mktemp("capped")
    with gateway_of(
        redis_server.url, upstream_server, directory, GATEWAY_MAX_UPSTREAM_RESPONSE_BYTES=str(CAP)
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def roomy(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway with the default cap (1.5 GiB)."""
    with gateway_of(redis_server.url, upstream_server, tmp_path_factory.mktemp("roomy")) as gateway:
        yield gateway


def image_event(index: int, size: int, end: bytes = b"\n") -> bytes:
    """One ``partial_succeeded`` event whose base64 image is ``size`` bytes, lines ended by ``end``."""
    data = {"type": SUCCEEDED, "image_index": index, "b64_json": "A" * size, "size": "2048x2048"}
    return b"event: " + SUCCEEDED.encode() + end + b"data: " + orjson.dumps(data) + end + end


def completed_event(images: int, end: bytes = b"\n") -> bytes:
    data = {"type": COMPLETED, "usage": {"generated_images": images}}
    return (
        b"event: "
        + COMPLETED.encode()
        + end
        + b"data: "
        + orjson.dumps(data)
        + end
        + end
        + b"data: [DONE]"
        + end
        + end
    )


@dataclass
class EventSource:
    """The upstream's side of one stream: the pieces it writes, and how far it got."""

    pieces: list[bytes]
    piece_bytes: int = 256 * 1024  # written in pieces of this size at most
    written: int = 0
    finished: bool = False
    write_started: float | None = None  # set while a write waits for the gateway to read
    _stop: asyncio.Event | None = field(default=None, repr=False)

    def blocked_for(self) -> float:
        return 0.0 if self.write_started is None else time.monotonic() - self.write_started

    async def __call__(self, request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for piece in self.pieces:
                for at in range(0, len(piece), self.piece_bytes):
                    part = piece[at : at + self.piece_bytes]
                    self.write_started = time.monotonic()
                    await response.write(part)
                    self.write_started = None
                    self.written += len(part)
            await response.write_eof()
            self.finished = True
        except (ConnectionError, RuntimeError):  # the gateway hung up
            pass
        return response


def post_stream(gw: Gateway, key: str, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "prompt": "x", "stream": True, **body}
    return httpx.post(
        f"{gw.url}/v1/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json=payload,
        timeout=120,
        verify=TLS,
    )


def whole_events(raw: bytes) -> list[dict[str, Any]]:
    """The events a caller's parser reads in full (any line end), their data parsed where it is JSON."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    found = []
    for block in text.split(b"\n\n")[:-1]:  # what follows the last blank line never ended
        data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
        try:
            found.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            found.append({"unparsed": data[:80]})
    return found


def succeeded(events: list[dict[str, Any]]) -> int:
    return sum(1 for event in events if event.get("type") == SUCCEEDED)


def unchunked(raw: bytes) -> bytes:
    """An HTTP/1.1 chunked body, decoded."""
    body, at = bytearray(), 0
    while True:
        line_end = raw.index(b"\r\n", at)
        size = int(raw[at:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(body)
        body += raw[line_end + 2 : line_end + 2 + size]
        at = line_end + 2 + size + 2


SEQUENTIAL = {
    "sequential_image_generation": "auto",
    "sequential_image_generation_options": {"max_images": 15},
}


def test_a_stream_past_the_cap_is_cut_and_charged_for_the_images_delivered_before(
    capped: Gateway, upstream: ScriptedUpstream
) -> None:
    source = EventSource([image_event(i, MiB) for i in range(40)] + [completed_event(40)])  # 40 MB
    upstream.answer = source
    key, key_id = capped.create_key(team="stream-cap", budget_usd="100")
    response = post_stream(capped, key, **SEQUENTIAL)
    assert response.status_code == 200
    events = whole_events(response.content)
    delivered = succeeded(events)
    assert 0 < delivered < 15, delivered  # 10 MiB hold about nine of them
    assert events[-1].get("error", {}).get("code") == "upstream_response_too_large", events[-1]
    assert len(response.content) <= CAP + 64 * 1024
    record = record_when_written(capped, response.headers["x-request-id"])
    assert (record["outcome"], record["reconcile"]) == ("too_large", 1)
    assert (record["images"], record["charge_micros"]) == (delivered, delivered * MODEL_PRICE_MICROS)
    assert not source.finished


def relay_seconds(gw: Gateway, key: str, upstream: ScriptedUpstream, size: int) -> float:
    """Time to relay one stream whose only image event holds ``size`` bytes, ended at its very end."""
    upstream.answer = EventSource([image_event(0, size) + completed_event(1)])
    started = time.monotonic()
    response = post_stream(gw, key)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and succeeded(whole_events(response.content)) == 1
    return elapsed


def test_relaying_one_large_event_is_linear_in_its_size(roomy: Gateway, upstream: ScriptedUpstream) -> None:
    key, _ = roomy.create_key(team="stream-linear", budget_usd="100")
    small, large = 4 * MiB, 16 * MiB
    relay_seconds(roomy, key, upstream, small)  # warm: connections, code paths
    times: dict[int, list[float]] = {small: [], large: []}
    for _ in range(2):  # side by side, best of two: the machine is shared
        for size in (small, large):
            times[size].append(relay_seconds(roomy, key, upstream, size))
    ratio = min(times[large]) / min(times[small])
    assert ratio < 8, (ratio, times)  # linear: 4x the bytes, about 4x the time; rescans made it 16x


def test_one_huge_event_without_a_blank_line_leaves_the_worker_answering(
    roomy: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = EventSource([image_event(0, 40 * MiB) + completed_event(1)])
    key, key_id = roomy.create_key(team="stream-huge", budget_usd="100")
    with Watch(roomy) as watch:
        response = post_stream(roomy, key)
    assert response.status_code == 200 and succeeded(whole_events(response.content)) == 1
    assert watch.slowest_healthz_s < 1.0, watch.slowest_healthz_s
    assert watch.grew_kb < 100 * 1024, (watch.before_kb, watch.peak_kb)
    assert roomy.usage(key_id)["spent_usd"] == "0.135000"


def test_a_caller_that_does_not_read_stops_the_gateway_reading_the_upstream(
    roomy: Gateway, upstream: ScriptedUpstream
) -> None:
    offered = 60  # 120 MB: three times what the gateway may let the upstream write ahead
    source = EventSource([image_event(i, 2 * MiB) for i in range(offered)] + [completed_event(offered)])
    upstream.answer = source
    key, key_id = roomy.create_key(team="stream-slow", budget_usd="100")
    before = gateway_rss(roomy)
    payload = orjson.dumps({"model": MODEL, "prompt": "x", "stream": True, "n": 1})
    caller = socket.create_connection(("127.0.0.1", roomy.port))
    caller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        caller.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (key.encode(), len(payload), payload)
        )
        # The caller reads nothing: the upstream must end up waiting on the gateway, not finish.
        wait_until(
            lambda: source.finished or source.blocked_for() > 1.0,
            timeout_s=60,
            what="the upstream blocked by the gateway, or finished",
        )
        held_kb = gateway_rss(roomy) - before
        assert not source.finished and source.written < 40 * MiB, source.written
        assert held_kb < 64 * 1024, held_kb
        caller.settimeout(60)  # now read it all: nothing was lost while the gateway waited
        received = bytearray()
        while not received.endswith(b"0\r\n\r\n"):
            chunk = caller.recv(1 << 20)
            assert chunk, "the gateway closed the stream early"
            received += chunk
    finally:
        caller.close()
    body = unchunked(bytes(received).partition(b"\r\n\r\n")[2])
    assert source.finished and succeeded(whole_events(body)) == offered
    wait_until(lambda: roomy.usage(key_id)["spent_usd"] == "0.135000", what="the stream settled")


@pytest.mark.parametrize("end", [b"\r", b"\r\n", b"\n"], ids=["CR", "CRLF", "LF"])
def test_every_line_end_the_standard_allows_is_counted(
    roomy: Gateway, upstream: ScriptedUpstream, end: bytes
) -> None:
    upstream.answer = EventSource(
        [b"".join(image_event(i, 1000, end) for i in range(3)) + completed_event(3, end)]
    )
    key, key_id = roomy.create_key(team="stream-ends", budget_usd="100")
    response = post_stream(roomy, key, **SEQUENTIAL)
    assert response.status_code == 200 and succeeded(whole_events(response.content)) == 3
    record = record_when_written(roomy, response.headers["x-request-id"])
    assert (record["outcome"], record["images"], record["upstream_images"], record["reconcile"]) == (
        "ok",
        3,
        3,
        0,
    )
    assert roomy.usage(key_id)["spent_usd"] == "0.405000"
