"""An upstream that delivers more images than were asked is charged only what was reserved.

The budget is a ceiling whatever the upstream does: a call is charged at most what it reserved
(``n``, or ``max_images`` with sequential generation), the images beyond it reach the caller all
the same, and the usage record counts them as ``over_delivered``, flagged for reconciliation, so
finance can settle them with the upstream; a metric counts them and an alert rule watches it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis

from tests.scripted_upstream import ScriptedUpstream, answer_json, gateway_of, record_when_written
from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    Gateway,
    RedisServer,
    generate,
    metric_value,
    reserve_one,
)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gw(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_of(redis_server.url, upstream_server, tmp_path_factory.mktemp("over")) as gateway:
        yield gateway


def over_delivered(gw: Gateway, team: str) -> float:
    return metric_value(gw.metrics(), "gateway_over_delivered_images_total", model=MODEL, team=team)


def images(count: int) -> list[dict[str, str]]:
    return [{"url": f"https://x.invalid/{i}.png"} for i in range(count)]


def charged(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["images"], record["over_delivered"], record["charge_micros"], record["reconcile"]


def test_ten_thousand_images_for_one_asked_charge_one_within_the_team_budget(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = answer_json(200, {"created": 1, "data": images(10_000)})
    gw.set_team("over-one", budget_usd="1000")
    key, key_id = gw.create_key(team="over-one")
    before = over_delivered(gw, "over-one")
    response = generate(gw, key, n=1)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 10_000  # delivered as the upstream sent them
    assert response.headers["x-gateway-cost-usd"] == "0.135000"
    record = record_when_written(gw, response.headers["x-request-id"])
    assert charged(record) == (1, 9_999, MODEL_PRICE_MICROS, 1)
    assert gw.team_usage("over-one")["spent_usd"] == "0.135000"
    assert gw.usage(key_id)["spent_usd"] == "0.135000"
    assert over_delivered(gw, "over-one") == before + 9_999


def test_a_sequential_call_is_charged_at_most_its_max_images(gw: Gateway, upstream: ScriptedUpstream) -> None:
    upstream.answer = answer_json(200, {"created": 1, "data": images(5)})
    key, key_id = gw.create_key(team="over-seq", budget_usd="10")
    response = generate(
        gw,
        key,
        sequential_image_generation="auto",
        sequential_image_generation_options={"max_images": 3},
    )
    assert response.status_code == 200 and response.headers["x-gateway-cost-usd"] == "0.405000"
    record = record_when_written(gw, response.headers["x-request-id"])
    assert charged(record) == (3, 2, 3 * MODEL_PRICE_MICROS, 1)
    assert gw.usage(key_id)["spent_usd"] == "0.405000"


def test_an_answer_that_delivers_what_was_asked_has_nothing_over(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = answer_json(200, {"created": 1, "data": images(2)})
    key, _ = gw.create_key(team="over-none", budget_usd="10")
    response = generate(gw, key, n=2)
    record = record_when_written(gw, response.headers["x-request-id"])
    assert charged(record) == (2, 0, 2 * MODEL_PRICE_MICROS, 0)


def test_a_large_streamed_answer_is_capped_alike(gw: Gateway, upstream: ScriptedUpstream) -> None:
    b64 = base64.b64encode(b"\x01" * MiB).decode()  # two images of 1.3 MB: streamed, not buffered
    upstream.answer = answer_json(200, {"created": 1, "data": [{"b64_json": b64}, {"b64_json": b64}]})
    key, key_id = gw.create_key(team="over-large", budget_usd="10")
    response = generate(gw, key, n=1, response_format="b64_json")
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    record = record_when_written(gw, response.headers["x-request-id"])
    assert charged(record) == (1, 1, MODEL_PRICE_MICROS, 1)
    assert gw.usage(key_id)["spent_usd"] == "0.135000"


async def three_images_as_events(request: web.Request, body: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(3):
        event = {
            "type": "image_generation.partial_succeeded",
            "image_index": index,
            "url": f"https://x/{index}",
        }
        await response.write(
            b"event: image_generation.partial_succeeded\ndata: " + orjson.dumps(event) + b"\n\n"
        )
    done = {"type": "image_generation.completed", "usage": {"generated_images": 3}}
    await response.write(b"event: image_generation.completed\ndata: " + orjson.dumps(done) + b"\n\n")
    await response.write_eof()
    return response


def test_an_event_stream_with_more_images_than_asked_is_capped_alike(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    upstream.answer = three_images_as_events
    key, key_id = gw.create_key(team="over-stream", budget_usd="10")
    response = generate(gw, key, n=1, stream=True)
    assert response.status_code == 200 and response.text.count("partial_succeeded") >= 3
    record = record_when_written(gw, response.headers["x-request-id"])
    assert charged(record) == (1, 2, MODEL_PRICE_MICROS, 1)
    assert gw.usage(key_id)["spent_usd"] == "0.135000"


def test_the_settle_script_caps_an_order_that_claims_more_than_its_reservation(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Whatever built the order (a spooled one from an older release, a bug), the script charges
    no more than the reservation in Redis holds, records the rest as over-delivered, and counts
    the channel's cost of the images charged only."""
    from gateway.admin.keys import KeyCreate, KeyStore, parse_token
    from gateway.call.settle import SettleOrder, Settler
    from gateway.money.periods import Periods
    from gateway.money.spool import Spool
    from gateway.money.usage_record import UsageRecord
    from gateway.store.keyspace import KeySpace

    async def run() -> tuple[int, dict[bytes, bytes]]:
        client = Redis.from_url(redis_server.url)
        try:
            secret, made = await KeyStore(client).create(KeyCreate(team="over-script", name="old"))
            token = parse_token(secret)
            assert token is not None
            space, periods = KeySpace(made["key_id"], "over-script"), Periods.now()
            await reserve_one(client, space, token[1], "req_claims_ten")  # holds one image
            record = UsageRecord(
                request_id="req_claims_ten", ts_ms=0, day=periods.day, team="over-script",
                key_id=space.key_id, key_name="old", model="m", n=1, images=10, upstream_images=-1,
                unit_price_micros=1_000_000, charge_micros=10_000_000, upstream_status=200,
                upstream_latency_ms=1, outcome="ok", client_left=0, reconcile=0,
                channel="alpha", cost_micros=10 * 150_000,
            )  # fmt: skip
            order = SettleOrder(
                space.key_id, "req_claims_ten", "m", 10, 10_000_000, periods.day, periods.month, record
            )
            settled = await Settler(client, Spool(tmp_path / "spool", "t"), 400).settle(order)
            assert settled is not None
            return settled.spent_micros, (await client.xrange(space.ledger))[-1][1]
        finally:
            await client.aclose()

    spent, last = asyncio.run(run())
    assert spent == 1_000_000  # reserve_one holds one image at 1 USD
    fields = {k.decode(): v.decode() for k, v in last.items()}
    assert (fields["images"], fields["over_delivered"], fields["charge_micros"], fields["reconcile"]) == (
        "1",
        "9",
        "1000000",
        "1",
    )
    assert (fields["channel"], fields["cost_micros"]) == ("alpha", "150000")
