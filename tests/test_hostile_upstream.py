"""What the gateway does with an upstream's answers it must not take on trust."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.scripted_upstream import FAILED, ScriptedUpstream, answer_json, gateway_of, ledger_record
from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    UPSTREAM_KEY,
    Gateway,
    RedisServer,
    generate,
    metric_value,
    wait_until,
)


@pytest.fixture(scope="module")
def gw(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway for the module: each test has its own keys, and counts metrics from where it began."""
    with gateway_of(redis_server.url, upstream_server, tmp_path_factory.mktemp("hostile")) as gateway:
        yield gateway


def failed_images(gw: Gateway) -> float:
    code = FAILED["error"]["code"]
    return metric_value(gw.metrics(), "gateway_upstream_failed_images_total", model=MODEL, code=code)


def usage_mismatches(gw: Gateway) -> float:
    return metric_value(gw.metrics(), "gateway_upstream_usage_mismatches_total", model=MODEL)


def image(index: int) -> dict[str, Any]:
    return {"url": f"https://example.invalid/{index}.png", "size": "2048x2048"}


def test_a_master_key_echoed_in_any_error_field_never_reaches_the_caller(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    echo = f"Bearer {UPSTREAM_KEY}"
    upstream.answer = answer_json(
        400, {"error": {"message": f"bad header {echo}", "code": echo, "param": echo, "type": echo}}
    )
    key, _ = gw.create_key()
    response = generate(gw, key)
    assert response.status_code == 400
    assert UPSTREAM_KEY not in response.text
    assert all(UPSTREAM_KEY not in value for value in response.headers.values())
    assert upstream.seen_authorization[-1] == echo  # the upstream really was sent the key


def test_a_master_key_echoed_in_a_success_never_reaches_the_caller(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = answer_json(
        200, {"created": 1, "data": [{"url": f"https://x.invalid/?k={UPSTREAM_KEY}"}]}
    )
    key, _ = gw.create_key()
    response = generate(gw, key)
    assert response.status_code == 200
    assert UPSTREAM_KEY not in response.text and response.json()["data"][0]["url"].startswith(
        "https://x.invalid/"
    )


def test_only_entries_that_are_images_are_charged(gw: Gateway, upstream: ScriptedUpstream) -> None:
    document = {
        "created": 1,
        "data": [image(0), FAILED, image(2)],
        "usage": {"generated_images": 2, "output_tokens": 32768, "total_tokens": 32768},
    }
    upstream.answer = answer_json(200, document)
    key, key_id = gw.create_key(budget_usd="10")
    failed_before = failed_images(gw)
    response = generate(gw, key, n=3)
    assert response.status_code == 200
    assert response.headers["x-gateway-cost-usd"] == "0.270000"
    data = response.json()["data"]
    assert data[1] == FAILED and data[0]["url"].endswith("0.png")  # the answer as it came, in order
    record = ledger_record(gw, response.headers["x-request-id"])
    assert (record["images"], record["upstream_images"], record["charge_micros"], record["reconcile"]) == (
        2,
        2,
        2 * MODEL_PRICE_MICROS,
        0,
    )
    assert gw.usage(key_id)["spent_usd"] == "0.270000"
    assert failed_images(gw) == failed_before + 1


def test_a_set_whose_entries_all_failed_costs_nothing(gw: Gateway, upstream: ScriptedUpstream) -> None:
    upstream.answer = answer_json(
        200, {"created": 1, "data": [FAILED, FAILED], "usage": {"generated_images": 0}}
    )
    key, key_id = gw.create_key(budget_usd="10")
    response = generate(gw, key, n=2)
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    assert response.headers["x-gateway-cost-usd"] == "0.000000"
    assert gw.usage(key_id)["spent_usd"] == "0.000000"


def test_a_usage_that_disagrees_with_the_images_is_flagged_for_reconciliation(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = answer_json(200, {"created": 1, "data": [image(0)], "usage": {"generated_images": 3}})
    key, _ = gw.create_key()
    mismatches_before = usage_mismatches(gw)
    response = generate(gw, key, n=3)
    assert response.headers["x-gateway-cost-usd"] == "0.135000"  # the charge follows the entries
    record = ledger_record(gw, response.headers["x-request-id"])
    assert (record["images"], record["upstream_images"], record["reconcile"]) == (1, 3, 1)
    assert usage_mismatches(gw) == mismatches_before + 1


def test_a_free_model_costs_nothing_and_leaves_its_key_usable(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    """A price of 0 once broke every key that used it: releasing a 0 reservation sent HINCRBY -0."""
    upstream.answer = answer_json(200, {"created": 1, "data": [image(0)]})
    with gw.admin() as admin:
        assert admin.put("/admin/v1/prices/free-model", json={"price_usd": "0"}).status_code == 200
    key, key_id = gw.create_key(budget_usd="1")
    wait_until(lambda: generate(gw, key, model="free-model").status_code == 200, what="free model priced")
    for _ in range(3):
        response = generate(gw, key, model="free-model")
        assert response.status_code == 200 and response.headers["x-gateway-cost-usd"] == "0.000000"
    usage = gw.usage(key_id)
    assert (usage["spent_usd"], usage["reserved_usd"], usage["inflight"]) == ("0.000000", "0.000000", 0)
    assert generate(gw, key).status_code == 200  # a priced model still works on the same key


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
@pytest.mark.parametrize("images", [1, 3], ids=["small", "over-1-mib"])
def test_an_answer_compressed_as_the_call_allowed_reaches_the_caller_as_json(
    gw: Gateway, upstream: ScriptedUpstream, encoding: str, images: int
) -> None:
    """The generations call accepts gzip and deflate: an upstream that uses them is decoded, so its
    images are counted and charged and the caller reads the JSON itself (a large answer too, which
    is relayed as it arrives)."""
    picture = "A" * (512 * 1024)  # 3 of them make an answer over the 1 MiB read whole
    document = {"created": 1, "data": [{"b64_json": picture} for _ in range(images)]}
    raw = orjson.dumps(document)
    packed = {
        "gzip": lambda: gzip.compress(raw),
        "deflate": lambda: zlib.compress(raw),
        "raw-deflate": lambda: zlib.compress(raw, wbits=-zlib.MAX_WBITS),
    }[encoding]()
    asked: list[str] = []

    def compressed(request: web.Request, body: bytes) -> web.Response:
        asked.append(request.headers.get("Accept-Encoding", ""))
        name = "deflate" if "deflate" in encoding else "gzip"
        headers = {"Content-Encoding": name}
        return web.Response(status=200, body=packed, content_type="application/json", headers=headers)

    upstream.answer = compressed
    key, key_id = gw.create_key(budget_usd="10")
    response = generate(gw, key, n=images)
    assert response.status_code == 200 and response.content == raw
    assert "content-encoding" not in response.headers
    assert gw.usage(key_id)["spent_usd"] == f"{0.135 * images:.6f}"
    assert asked == ["gzip, deflate"]


@pytest.mark.parametrize("retry_after", ["1e999", "-1e999", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_an_upstream_rate_limit_with_any_retry_after_is_a_429_with_a_bounded_wait(
    gw: Gateway, upstream: ScriptedUpstream, retry_after: str
) -> None:
    upstream.answer = answer_json(429, {"error": {"message": "slow down"}}, {"Retry-After": retry_after})
    key, key_id = gw.create_key()
    response = generate(gw, key)
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert gw.usage(key_id)["inflight"] == 0
