"""Three gateway replicas sharing one Redis, as behind a load balancer: every guarantee holds
across them. The third replica runs two uvicorn workers, as a production pod may."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    TLS,
    Gateway,
    RedisServer,
    Simulator,
    agenerate,
    gateway_env,
    generate,
    key_space,
    metric_value,
    ready_together,
)

PRICE_USD = Decimal(MODEL_PRICE_MICROS) / 1_000_000


@pytest.fixture(scope="module")
def replicas(
    redis_server: RedisServer, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gateway]]:
    """Started once for the module, like ``gateway_factory`` does per test (three starts cost ~6 s).

    Tests tell their traffic apart by their own keys and team labels.
    """
    directory = tmp_path_factory.mktemp("replicas")
    started: list[Gateway] = []
    try:
        for index, extra in enumerate(({}, {}, {"GATEWAY_WORKERS": "2"})):
            env = gateway_env(redis_server.url, simulator.url, directory / f"state-{index}", **extra)
            started.append(Gateway(env, directory / f"gateway-{index}.log").start(wait_ready=False))
        ready_together(*started)
        yield started
    finally:
        for gateway in started:
            gateway.stop()


async def _fire(calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """``(base_url, key, body)`` calls, all at once."""
    limits = httpx.Limits(max_connections=len(calls))
    async with httpx.AsyncClient(timeout=60, limits=limits, verify=TLS) as client:
        return await asyncio.gather(*(agenerate(client, key, url, **body) for url, key, body in calls))


def _spread(
    replicas: list[Gateway], key: str, count: int, body: dict[str, Any]
) -> list[tuple[str, str, dict]]:
    return [(replicas[i % len(replicas)].url, key, body) for i in range(count)]


def test_budgets_hold_exactly_across_three_replicas(replicas: list[Gateway], simulator: Simulator) -> None:
    """Two keys raced at once from three replicas: 60 calls on 10 images, 60 calls of n=2 on 7."""
    small, small_id = replicas[0].create_key(budget_usd=str(10 * PRICE_USD), budget_period="total")
    pairs, pairs_id = replicas[1].create_key(budget_usd=str(15 * PRICE_USD), budget_period="day")
    one = {"model": MODEL, "prompt": "replica race"}
    two = {"model": MODEL, "prompt": "replica race, two images", "n": 2}
    calls = _spread(replicas, small, 60, one) + _spread(replicas, pairs, 60, two)
    before = simulator.count()
    responses = asyncio.run(_fire(calls))

    small_statuses = Counter(r.status_code for r in responses[:60])
    pair_statuses = Counter(r.status_code for r in responses[60:])
    unexpected = [r.text for r in responses if r.status_code not in (200, 429)][:3]
    assert small_statuses == {200: 10, 429: 50}, (small_statuses, unexpected)
    # 15 images of budget and 2 per call: 7 calls fit (14 images), the 8th would overspend.
    assert pair_statuses == {200: 7, 429: 53}, (pair_statuses, unexpected)
    assert simulator.count() - before == 17
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"insufficient_quota"}

    small_usage, pair_usage = replicas[2].usage(small_id), replicas[0].usage(pairs_id)
    assert Decimal(small_usage["spent_usd"]) == 10 * PRICE_USD
    assert Decimal(pair_usage["spent_usd"]) == 14 * PRICE_USD
    assert Decimal(small_usage["reserved_usd"]) == Decimal(pair_usage["reserved_usd"]) == 0


def test_key_revoked_through_one_replica_is_refused_by_the_others(replicas: list[Gateway]) -> None:
    key, key_id = replicas[0].create_key()

    def post(gateway: Gateway) -> httpx.Response:
        return generate(gateway, key, prompt="before and after revocation")

    assert [post(g).status_code for g in replicas] == [200, 200, 200]  # every replica knows the key
    with replicas[1].admin() as admin:
        assert admin.delete(f"/admin/v1/keys/{key_id}").json()["status"] == "revoked"
    for gateway in (replicas[0], replicas[2], replicas[1]):
        refused = post(gateway)
        assert refused.status_code == 401, (gateway.url, refused.text)
        assert refused.json()["error"]["code"] == "key_revoked"


def test_metrics_of_the_replicas_add_up_to_the_ledger(
    replicas: list[Gateway], redis_server: RedisServer
) -> None:
    """Images and spend summed over the three /metrics pages equal the keys' spend and the ledger."""
    team = "replicas-" + secrets.token_hex(4)
    keys = [
        replicas[i].create_key(team=team, budget_usd=str(12 * PRICE_USD), budget_period="month")
        for i in range(3)
    ]
    bodies = [
        {"model": MODEL, "prompt": "one"},
        {"model": MODEL, "prompt": "three", "n": 3},
        {"model": MODEL, "prompt": "partial", "n": 4, "simulator_fault": "images=2"},
        {"model": MODEL, "prompt": "failed", "simulator_fault": "status=500"},
    ]
    # 9 rounds x 3 keys x (1+3+2 images): more than the 12-image budgets, so refusals happen too.
    calls = [
        (replicas[(i + k) % 3].url, key, body)
        for i in range(9)
        for k, (key, _) in enumerate(keys)
        for body in bodies
    ]
    # One paid call through each replica first, so that every /metrics page has a share; then
    # the burst, whose paid calls may land anywhere.
    first = [(gateway.url, key, bodies[0]) for gateway, (key, _) in zip(replicas, keys, strict=True)]
    responses = asyncio.run(_fire(first))
    assert [r.status_code for r in responses] == [200, 200, 200]
    responses += asyncio.run(_fire(calls))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] > 3 and statuses[429], statuses

    pages = [g.metrics() for g in replicas]
    images = sum(metric_value(page, "gateway_images_total", team=team) for page in pages)
    spend_usd = sum(metric_value(page, "gateway_spend_usd_total", team=team) for page in pages)
    assert all(metric_value(page, "gateway_images_total", team=team) >= 1 for page in pages)

    usage_micros = sum(int(Decimal(replicas[0].usage(key_id)["spent_usd"]) * 1_000_000) for _, key_id in keys)
    with redis_server.client() as client:
        ledger = [f for _, key_id in keys for _, f in client.xrange(key_space(client, key_id).ledger)]
    ledger_micros = sum(int(f[b"charge_micros"]) for f in ledger)
    ledger_images = sum(int(f[b"images"]) for f in ledger)
    delivered = sum(len(r.json()["data"]) for r in responses if r.status_code == 200)

    assert images == ledger_images == delivered
    assert usage_micros == ledger_micros == delivered * MODEL_PRICE_MICROS
    assert round(Decimal(spend_usd), 6) == Decimal(ledger_micros) / 1_000_000
