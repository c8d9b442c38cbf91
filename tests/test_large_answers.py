"""Large answers in bounded memory, and the upstream answer's size cap.

A 200 answer over 1 MiB is streamed to the caller as it arrives, its images counted on the way;
the charge is settled once it has ended. Each test scripts a real upstream over HTTP and drives a
real gateway process; memory is read from /proc, never guessed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from gateway.call.openai_compat import conform_images_body
from tests.measure import gateway_rss
from tests.scripted_upstream import (
    FAILED,
    ScriptedUpstream,
    answer_json,
    gateway_of,
    ledger_record,
    record_when_written,
)
from tests.support import MODEL, MODEL_PRICE_MICROS, TLS, UPSTREAM_KEY, Gateway, RedisServer

MiB = 1024 * 1024
CAP = 128 * MiB
OFFERED = 1024 * MiB  # what a runaway upstream offers: the gateway must stop at CAP
RSS_MARGIN_KB = 200 * 1024  # generous: buffering the refused answer would be 128 MB and up


@pytest.fixture(scope="module")
def gw(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway for the module: each test has its own keys, and measures memory from where it began."""
    directory = tmp_path_factory.mktemp("large")
    cap = {"GATEWAY_MAX_UPSTREAM_RESPONSE_BYTES": str(CAP)}
    with gateway_of(redis_server.url, upstream_server, directory, **cap) as gateway:
        yield gateway


def request_stream(gw: Gateway, key: str) -> Any:
    return httpx.stream(
        "POST",
        f"{gw.url}/v1/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "prompt": "a lighthouse", "n": 3, "response_format": "b64_json"},
        timeout=120,
        verify=TLS,
    )


def b64_image(index: int, size: int) -> str:
    return base64.b64encode(bytes([index]) * (size * 3 // 4)).decode()


def test_a_large_answer_arrives_intact_and_is_charged_per_image(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    document = {
        "created": 1,
        "note": f"echoed Bearer {UPSTREAM_KEY}",
        "data": [{"b64_json": b64_image(i, 8 * MiB), "size": "4096x4096"} for i in range(3)] + [FAILED],
        "usage": {"generated_images": 3, "output_tokens": 16384, "total_tokens": 16384},
    }
    raw = orjson.dumps(document)
    upstream.answer = answer_json(200, document)
    key, key_id = gw.create_key(budget_usd="10")
    with request_stream(gw, key) as response:
        assert response.status_code == 200
        assert "x-gateway-cost-usd" not in response.headers  # streamed: the count came after them
        received = response.read()
    expected = conform_images_body(raw, orjson.loads(raw)).replace(UPSTREAM_KEY.encode(), b"***")
    assert received == expected  # byte for byte, but for the usage splice and the masked key
    assert orjson.loads(received)["usage"]["input_tokens"] == 0
    record = ledger_record(gw, response.headers["x-request-id"])
    charged = (record["images"], record["upstream_images"], record["charge_micros"])
    assert charged == (3, 3, 3 * MODEL_PRICE_MICROS)
    assert (record["outcome"], record["reconcile"]) == ("ok", 0)
    assert gw.usage(key_id)["spent_usd"] == "0.405000"


def test_a_small_answer_keeps_its_cost_headers(gw: Gateway, upstream: ScriptedUpstream) -> None:
    document = {"created": 1, "data": [{"b64_json": b64_image(1, 512 * 1024)}]}
    raw = orjson.dumps(document)
    upstream.answer = answer_json(200, document)
    key, _ = gw.create_key(budget_usd="10")
    with request_stream(gw, key) as response:
        assert response.read() == raw
    assert response.headers["x-gateway-cost-usd"] == "0.135000"


def runaway(declare_length: bool) -> Callable[[web.Request, bytes], Any]:
    """An upstream that offers 1 GB of one endless base64 string, one MiB at a time."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declare_length:
            response.content_length = OFFERED
        await response.prepare(request)
        await response.write(b'{"created": 1, "data": [{"b64_json": "')
        block = b"A" * MiB
        try:
            for _ in range(OFFERED // MiB - 1):
                await response.write(block)
        except (ConnectionError, RuntimeError):  # the gateway hung up: what it should do
            pass
        return response

    return answer


def test_an_answer_declared_over_the_cap_is_refused_with_502_and_no_charge(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = runaway(declare_length=True)
    key, key_id = gw.create_key(budget_usd="10")
    before = gateway_rss(gw)
    with request_stream(gw, key) as response:
        body = response.read()
    assert response.status_code == 502
    assert orjson.loads(body)["error"]["code"] == "upstream_response_too_large"
    assert gateway_rss(gw) < before + RSS_MARGIN_KB
    record = ledger_record(gw, response.headers["x-request-id"])
    assert (record["outcome"], record["reconcile"], record["charge_micros"]) == ("too_large", 1, 0)
    assert gw.usage(key_id)["spent_usd"] == "0.000000"


def test_a_streamed_answer_past_the_cap_cuts_the_connection_in_bounded_memory(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = runaway(declare_length=False)
    key, key_id = gw.create_key(budget_usd="10")
    before, peak, received = gateway_rss(gw), 0, 0
    with request_stream(gw, key) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # cut, never finished with a made-up tail
            for chunk in response.iter_raw(MiB):
                received += len(chunk)
                if received % (16 * MiB) < len(chunk):
                    peak = max(peak, gateway_rss(gw))
    assert CAP - 2 * MiB <= received <= CAP
    assert peak < before + RSS_MARGIN_KB, (before, peak)
    record = record_when_written(gw, response.headers["x-request-id"])
    assert (record["outcome"], record["reconcile"], record["charge_micros"]) == ("too_large", 1, 0)
    assert gw.usage(key_id)["spent_usd"] == "0.000000"


def breaking(tail: bytes, drop: bool) -> Callable[[web.Request, bytes], Any]:
    """Two good images, then either a dropped connection or JSON that goes wrong."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        head = orjson.dumps({"data": [{"b64_json": b64_image(i, 2 * MiB)} for i in range(2)]})[:-2]
        await response.write(head + b"," + tail)
        if drop:
            assert request.transport is not None
            request.transport.close()
        else:
            await response.write_eof()
        return response

    return answer


@pytest.mark.parametrize(
    ("tail", "drop"),
    [(b'{"b64_json": "AAAA', True), (b'{"b64_json": "AAAA"}]]}', False), (b'{"url": "x"}', False)],
    ids=["dropped", "malformed", "unfinished"],
)
def test_an_answer_that_breaks_mid_way_cuts_the_connection_and_is_flagged(
    gw: Gateway, upstream: ScriptedUpstream, tail: bytes, drop: bool
) -> None:
    upstream.answer = breaking(tail, drop)
    key, key_id = gw.create_key(budget_usd="10")
    with request_stream(gw, key) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    record = record_when_written(gw, response.headers["x-request-id"])
    assert (record["outcome"], record["reconcile"], record["charge_micros"]) == ("bad_response", 1, 0)
    assert gw.usage(key_id)["spent_usd"] == "0.000000"


def test_a_streamed_answer_under_an_idempotency_key_is_charged_once(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    document = {"created": 1, "data": [{"b64_json": b64_image(2, 2 * MiB)}]}
    raw = orjson.dumps(document)
    upstream.answer = answer_json(200, document)
    key, key_id = gw.create_key(budget_usd="10")
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "large-1"}
    call = {"model": MODEL, "prompt": "a lighthouse", "response_format": "b64_json"}
    url = f"{gw.url}/v1/images/generations"
    first = httpx.post(url, headers=headers, json=call, timeout=60, verify=TLS)
    assert first.status_code == 200 and first.content == raw
    again = httpx.post(url, headers=headers, json=call, timeout=60, verify=TLS)
    assert again.status_code == 409 and again.json()["error"]["code"] == "idempotency_result_not_replayable"
    assert len(upstream.seen_authorization) == 1
    assert gw.usage(key_id)["spent_usd"] == "0.135000"
