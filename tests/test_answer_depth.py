"""A deeply nested answer is refused in bounded memory, and the worker keeps answering meanwhile.

An upstream 200 larger than 1 MiB is scanned as it streams by (gateway/call/answer_scan.py). A
hostile one nests millions of arrays after its images: the scan must stop at a sane depth, as the
buffered path's parser does, and treat the answer as unreadable (no charge, a record to
reconcile), not hold an object per open bracket.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from aiohttp import web

from gateway.call.answer_scan import ImagesScanner, Malformed
from tests.measure import Watch
from tests.scripted_upstream import ScriptedUpstream, gateway_of, record_when_written
from tests.support import MODEL, TLS, Gateway, RedisServer

MiB = 1024 * 1024
LEVELS = 3_000_000  # 6 MB of brackets: the attack as it was measured
GROWTH_LIMIT_KB = 100 * 1024  # generous: one object per bracket cost over 400 MB here
HEALTHZ_LIMIT_S = 1.0  # generous: a scan without a depth bound stalled the worker for seconds


@pytest.fixture(scope="module")
def gw(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_of(redis_server.url, upstream_server, tmp_path_factory.mktemp("depth")) as gateway:
        yield gateway


def nested(levels: int, *, filler: int = 0) -> bytes:
    """An answer with one image, then ``levels`` nested arrays (after ``filler`` bytes of text)."""
    head = {"created": 1, "data": [{"url": "https://x.invalid/0.png"}], "note": "n" * filler}
    return orjson.dumps(head)[:-1] + b',"x":' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize("filler", [0, 2 * MiB], ids=["nested-early", "nested-after-2MiB"])
def test_a_deeply_nested_answer_is_refused_in_bounded_memory_while_the_worker_answers(
    gw: Gateway, upstream: ScriptedUpstream, filler: int
) -> None:
    raw = nested(LEVELS, filler=filler)
    upstream.answer = lambda request, body: web.Response(body=raw, content_type="application/json")
    key, key_id = gw.create_key(budget_usd="10")
    url = f"{gw.url}/v1/images/generations"
    payload = {"model": MODEL, "prompt": "x", "n": 1}
    with Watch(gw) as watch:
        with httpx.stream(
            "POST", url, headers={"Authorization": f"Bearer {key}"}, json=payload, timeout=120, verify=TLS
        ) as response:
            try:
                body = response.read()
            except httpx.RemoteProtocolError:  # cut after its head went out: never a whole document
                body = None
        request_id = response.headers["x-request-id"]
        record = record_when_written(gw, request_id)
    if filler:  # found past the first MiB, once the answer's head was out: the connection is cut
        assert response.status_code == 200 and body is None
    else:  # found in the beginning, read before answering: an ordinary 502
        assert response.status_code == 502 and body is not None
        assert orjson.loads(body)["error"]["code"] == "upstream_bad_response"
    assert (record["outcome"], record["reconcile"], record["charge_micros"]) == ("bad_response", 1, 0)
    assert gw.usage(key_id)["spent_usd"] == "0.000000"
    assert watch.grew_kb < GROWTH_LIMIT_KB, (watch.before_kb, watch.peak_kb)
    assert watch.slowest_healthz_s < HEALTHZ_LIMIT_S, watch.slowest_healthz_s


MAX_DEPTH = 1024  # orjson's: the buffered path refuses deeper answers


def test_the_scan_stops_past_its_depth_bound_as_the_buffered_parser_does() -> None:
    inside = b'{"data": [], "x": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    scanner = ImagesScanner()
    scanner.feed(inside)
    scanner.finish()
    orjson.loads(inside)  # the buffered path reads it too
    beyond = b'{"data": [], "x": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    with pytest.raises(Malformed):
        ImagesScanner().feed(beyond)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(beyond)
