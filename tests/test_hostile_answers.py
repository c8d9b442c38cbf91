"""Answers an upstream must not be trusted with, second round: what each must leave intact.

A ``Retry-After`` no integer can hold; the master key written with JSON escapes, which the caller's
parser decodes back to the key; a body that stops after its 200; an answer whose failed entries
each carry a code of their own. Each against a real gateway process and a scripted upstream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.scripted_upstream import ScriptedUpstream, answer_json, gateway_of, record_when_written
from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    TLS,
    UPSTREAM_KEY,
    Gateway,
    RedisServer,
    generate,
    wait_until,
)

MiB = 1024 * 1024
TIMEOUT_S = 3  # the gateway's upstream timeout here: a stalled body is given up after it


@pytest.fixture(scope="module")
def gw(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("hostile-answers")
    with gateway_of(
        redis_server.url, upstream_server, directory, GATEWAY_UPSTREAM_TIMEOUT_S=str(TIMEOUT_S)
    ) as gateway:
        yield gateway


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("retry_after", ["inf", "1e999", "-inf", "nan", "99999999999999999999999"])
def test_a_rate_limit_with_an_unbounded_retry_after_is_an_ordinary_429_that_holds_nothing(
    gw: Gateway, upstream: ScriptedUpstream, retry_after: str, stream: bool
) -> None:
    upstream.answer = answer_json(429, {"error": {"message": "slow down"}}, {"Retry-After": retry_after})
    key, key_id = gw.create_key(team="retry-after", budget_usd="10", max_concurrent=2)
    ids = []
    for _ in range(3):  # two held slots would refuse the third: every call must release its own
        response = generate(gw, key, stream=stream)
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        ids.append(response.headers["x-request-id"])
    usage = gw.usage(key_id)
    assert (usage["inflight"], usage["reserved_usd"], usage["spent_usd"]) == (0, "0.000000", "0.000000")
    for request_id in ids:
        record = record_when_written(gw, request_id)
        assert (record["outcome"], record["upstream_status"], record["charge_micros"]) == (
            "rate_limited",
            429,
            0,
        )


# -- the master key, JSON-escaped ------------------------------------------------------------------


def escaped_forms() -> dict[str, str]:
    """The key with characters written as JSON escapes, in the ways an encoder may write them."""
    dash = UPSTREAM_KEY.index("-")
    return {
        "dash": UPSTREAM_KEY[:dash] + "\\u002d" + UPSTREAM_KEY[dash + 1 :],
        "dash-upper": UPSTREAM_KEY[:dash] + "\\u002D" + UPSTREAM_KEY[dash + 1 :],
        "first": "\\u0074" + UPSTREAM_KEY[1:],
        "every": "".join(f"\\u{ord(c):04x}" for c in UPSTREAM_KEY),
        "last": UPSTREAM_KEY[:-1] + f"\\u{ord(UPSTREAM_KEY[-1]):04X}",
    }


FORMS = list(escaped_forms())  # the names only: the key is random per process


def leaks(raw: bytes) -> bool:
    """Whether a JSON parser reading ``raw`` finds the key anywhere (the way a caller would)."""
    return UPSTREAM_KEY in json.dumps(orjson.loads(raw), ensure_ascii=False)


def raw_answer(body: bytes, content_type: str = "application/json") -> Any:
    return lambda request, sent: web.Response(body=body, content_type=content_type)


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("size", ["small", "large"])
def test_a_master_key_written_with_json_escapes_never_reaches_the_caller(
    gw: Gateway, upstream: ScriptedUpstream, name: str, size: str
) -> None:
    form = escaped_forms()[name]
    filler = "A" * (2 * MiB if size == "large" else 16)
    body = (
        '{"created": 1, "data": [{"b64_json": "' + filler + '", "revised_prompt": "k=' + form + '"}],'
        ' "note": "Bearer ' + form + '"}'
    ).encode()
    assert leaks(body)  # the upstream's answer, read by a JSON parser, holds the key
    upstream.answer = raw_answer(body)
    key, _ = gw.create_key(team="escaped-key", budget_usd="10")
    response = generate(gw, key, response_format="b64_json")
    assert response.status_code == 200
    assert not leaks(response.content), response.content[-300:]
    assert len(response.json()["data"]) == 1


@pytest.mark.parametrize("name", FORMS)
def test_a_master_key_written_with_json_escapes_never_reaches_a_stream(
    gw: Gateway, upstream: ScriptedUpstream, name: str
) -> None:
    form = escaped_forms()[name]
    event = (
        '{"type": "image_generation.partial_succeeded", "image_index": 0, "url": "https://x/?k=' + form + '"}'
    )
    done = '{"type": "image_generation.completed", "usage": {"generated_images": 1}}'
    body = (
        f"event: image_generation.partial_succeeded\ndata: {event}\n\n"
        f"event: image_generation.completed\ndata: {done}\n\ndata: [DONE]\n\n"
    ).encode()
    upstream.answer = raw_answer(body, "text/event-stream")
    key, key_id = gw.create_key(team="escaped-key", budget_usd="10")
    response = generate(gw, key, stream=True)
    assert response.status_code == 200
    datas = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
    assert len(datas) == 2 and not any(leaks(data.encode()) for data in datas), response.text
    record = record_when_written(gw, response.headers["x-request-id"])
    assert (record["images"], record["charge_micros"]) == (1, MODEL_PRICE_MICROS)


# -- a body that stalls after its 200 --------------------------------------------------------------


def stalls_after(head: bytes, declared: int) -> Any:
    """A 200 that declares ``declared`` bytes, sends ``head``, then nothing more."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = declared
        await response.prepare(request)
        await response.write(head)
        await asyncio.sleep(4 * TIMEOUT_S)  # the gateway gives up first
        return response

    return answer


@pytest.mark.parametrize("size", [1000, 3 * MiB], ids=["buffered", "streamed"])
def test_a_body_that_stalls_after_its_200_keeps_the_status_and_is_flagged_to_reconcile(
    gw: Gateway, upstream: ScriptedUpstream, size: int
) -> None:
    upstream.answer = stalls_after(b'{"created": 1, "data": [{"b64_json": "' + b"A" * (size // 2), size)
    key, key_id = gw.create_key(team="stalled-body", budget_usd="10")
    payload = {"model": MODEL, "prompt": "x"}
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{gw.url}/v1/images/generations"
    with httpx.stream("POST", url, json=payload, headers=headers, verify=TLS, timeout=60) as response:
        try:
            response.read()
            finished = True
        except httpx.RemoteProtocolError:  # a streamed answer is cut, never finished with a made-up tail
            finished = False
    if size < MiB:  # read whole before answering: the caller is told it timed out
        assert finished and response.status_code == 504, response.text
    else:
        assert not finished and response.status_code == 200
    record = record_when_written(gw, response.headers["x-request-id"])
    assert (record["upstream_status"], record["reconcile"], record["charge_micros"]) == (200, 1, 0), record
    assert gw.usage(key_id)["spent_usd"] == "0.000000"


# -- log lines --------------------------------------------------------------------------------------


def test_an_answer_with_thousands_of_failure_codes_writes_a_bounded_log_line(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    entries = [{"error": {"code": f"Code{i:05d}" + "x" * 80, "message": "no"}} for i in range(20_000)]
    upstream.answer = answer_json(200, {"created": 1, "data": [{"url": "https://x/0.png"}, *entries]})
    key, _ = gw.create_key(team="log-bound", budget_usd="10")
    response = generate(gw, key)
    assert response.status_code == 200 and len(response.json()["data"]) == 20_001
    request_id = response.headers["x-request-id"]

    def line() -> str | None:
        return next((x for x in gw.log().splitlines() if f'"request_id":"{request_id}"' in x), None)

    found = wait_until(line, what="the access line")
    assert len(found) < 4096, len(found)
    logged = json.loads(found)
    assert logged["images"] == 1 and logged["failed_images_total"] == 20_000, logged
    assert 0 < len(logged["failed_images"]) <= 20
