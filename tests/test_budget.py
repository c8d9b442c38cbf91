"""Spend that cannot be overspent: concurrency, several processes, partial deliveries, failures."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections import Counter
from decimal import Decimal

import httpx
import openai
import pytest
import redis

from tests.fault_tools import doomed_gateway
from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    TLS,
    Gateway,
    Simulator,
    UtcSpan,
    agenerate,
    generate,
    key_space,
    wait_until,
)

PRICE_USD = Decimal(MODEL_PRICE_MICROS) / 1_000_000


async def _fire(urls: list[str], key: str, count: int, body: dict | None = None) -> list[httpx.Response]:
    """``count`` requests at once, spread round-robin over ``urls``."""
    payload = body or {"prompt": "budget race"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits, verify=TLS) as client:
        return await asyncio.gather(
            *(agenerate(client, key, urls[i % len(urls)], **payload) for i in range(count))
        )


def _assert_exact_race(
    responses: list[httpx.Response], calls_before: int, simulator: Simulator, usage: dict
) -> None:
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 10, 429: 40}, statuses
    refused = [r.json()["error"] for r in responses if r.status_code == 429]
    assert {e["code"] for e in refused} == {"insufficient_quota"}
    assert {r.headers["x-should-retry"] for r in responses if r.status_code == 429} == {"false"}
    assert simulator.count() - calls_before == 10
    assert Decimal(usage["spent_usd"]) == 10 * PRICE_USD
    assert Decimal(usage["reserved_usd"]) == 0
    assert Decimal(usage["remaining_usd"]) == 0


def test_fifty_concurrent_requests_on_a_ten_image_budget(gateway: Gateway, simulator: Simulator) -> None:
    key, key_id = gateway.create_key(budget_usd=str(10 * PRICE_USD), budget_period="total")
    before = simulator.count()
    responses = asyncio.run(_fire([gateway.url], key, 50))
    _assert_exact_race(responses, before, simulator, gateway.usage(key_id))


def test_same_race_across_two_gateway_processes(
    gateway: Gateway, redis_server, simulator: Simulator, gateway_factory
) -> None:
    first, second = gateway, gateway_factory(redis_server.url, simulator.url)  # the session's and one more
    key, key_id = first.create_key(budget_usd=str(10 * PRICE_USD), budget_period="month")
    before = simulator.count()
    responses = asyncio.run(_fire([first.url, second.url], key, 50))
    _assert_exact_race(responses, before, simulator, second.usage(key_id))


def test_budget_error_says_which_limit_and_when_it_resets(gateway: Gateway) -> None:
    key, _ = gateway.create_key(budget_usd="0.1", budget_period="month")
    response = generate(gateway, key)
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == error["code"] == "insufficient_quota"
    assert "monthly budget of $0.100000" in error["message"]
    assert "resets at" in error["message"]


def test_sdk_does_not_retry_an_exhausted_budget(
    gateway: Gateway, simulator: Simulator, openai_client
) -> None:
    key, key_id = gateway.create_key(budget_usd="0", budget_period="total")
    seen: list[int] = []
    import httpx2

    client = openai_client(
        key,
        http_client=httpx2.Client(
            event_hooks={"response": [lambda r: seen.append(r.status_code)]}, verify=TLS
        ),
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model=MODEL, prompt="x")
    assert caught.value.body["code"] == "insufficient_quota"
    assert seen == [429], "the SDK must send exactly one request"


def test_failed_upstream_call_costs_nothing(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(budget_usd="10", budget_period="day")
    for fault in (
        "status=500",
        "status=400,code=OutputImageSensitiveContentDetected",
        "status=429",
        "drop=1",
    ):
        response = generate(gateway, key, simulator_fault=fault)
        assert response.status_code >= 400, fault
    usage = gateway.usage(key_id)
    assert Decimal(usage["spent_usd"]) == 0
    assert Decimal(usage["reserved_usd"]) == 0


def test_charge_counts_images_returned_not_requested(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    response = generate(gateway, key, n=4, simulator_fault="images=3")
    assert response.status_code == 200
    assert len(response.json()["data"]) == 3
    assert Decimal(response.headers["x-gateway-cost-usd"]) == 3 * PRICE_USD
    usage = gateway.usage(key_id)
    assert Decimal(usage["spent_usd"]) == 3 * PRICE_USD
    assert Decimal(response.headers["x-gateway-budget-remaining-usd"]) == Decimal(10) - 3 * PRICE_USD


def test_a_periods_counters_expire_with_it_and_totals_never(gateway: Gateway, redis_server) -> None:
    """Day counters live 3 days and month ones 40 (kept a while for reports), set when a period's
    first charge creates them; later charges keep them; the total never expires. A team of its
    own: the session gateway's other tests charge the default team's counters earlier in the day."""
    key, key_id = gateway.create_key(
        team=f"expiry-{secrets.token_hex(4)}", budget_usd="10", budget_period="total"
    )
    span = UtcSpan()
    for _ in range(2):
        assert generate(gateway, key, n=2, simulator_fault="images=2").status_code == 200
    client = redis.Redis.from_url(redis_server.url)
    space = key_space(client, key_id)
    day, month = 3 * 86400, 40 * 86400
    assert int(client.get(space.spent("total"))) == 4 * MODEL_PRICE_MICROS
    for owner in (space, space.team_space):  # the key's counters and its team's
        assert int(client.get(owner.spent("total"))) >= 4 * MODEL_PRICE_MICROS
        assert client.ttl(owner.spent("total")) == -1
        # Across midnight the calls' counters are split between two days, each with its own TTL.
        assert sum(int(client.get(owner.images(d)) or 0) for d in span.days()) >= 4
        for d in span.days():
            if client.exists(owner.images(d)):
                assert day - 60 < client.ttl(owner.spent(f"d{d}")) <= day
                assert day - 60 < client.ttl(owner.images(d)) <= day
        months = [m for m in span.months() if client.exists(owner.spent(f"m{m}"))]
        assert months and all(month - 60 < client.ttl(owner.spent(f"m{m}")) <= month for m in months)
    client.close()


def test_sequential_generation_reserves_max_images(gateway: Gateway) -> None:
    """With sequential generation one call may return up to max_images: that is reserved."""
    key, key_id = gateway.create_key(budget_usd=str(4 * PRICE_USD), budget_period="total")
    too_many = {
        "sequential_image_generation": "auto",
        "sequential_image_generation_options": {"max_images": 5},
    }
    assert generate(gateway, key, **too_many).status_code == 429
    assert generate(gateway, key, sequential_image_generation="auto").status_code == 429
    fits = {**too_many, "sequential_image_generation_options": {"max_images": 4}}
    response = generate(gateway, key, **fits)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 4
    assert Decimal(gateway.usage(key_id)["spent_usd"]) == 4 * PRICE_USD


def test_images_beyond_the_reservation_are_delivered_but_not_charged(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    response = generate(gateway, key, n=1, simulator_fault="images=2")
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    assert Decimal(gateway.usage(key_id)["spent_usd"]) == PRICE_USD  # the budget is a ceiling


def test_revoked_key_is_refused_at_once(gateway: Gateway, openai_client) -> None:
    key, key_id = gateway.create_key()
    client = openai_client(key, max_retries=0)
    client.images.generate(model=MODEL, prompt="x")
    with gateway.admin() as admin:
        assert admin.delete(f"/admin/v1/keys/{key_id}").status_code == 200
    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(model=MODEL, prompt="x")
    assert "revoked" in caught.value.message


def test_expired_key_says_so(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key(expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(key, max_retries=0).images.generate(model=MODEL, prompt="x")
    assert "expired" in caught.value.message


def test_rotation_keeps_key_id_and_spend_and_honours_grace(gateway: Gateway) -> None:
    old, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    assert generate(gateway, old).status_code == 200
    with gateway.admin() as admin:
        rotated = admin.post(f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 0}).json()
    new = rotated["key"]
    assert rotated["key_id"] == key_id and new != old
    assert generate(gateway, old).status_code == 401
    assert generate(gateway, new).status_code == 200
    assert Decimal(gateway.usage(key_id)["spent_usd"]) == 2 * PRICE_USD
    with gateway.admin() as admin:
        graceful = admin.post(f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 600}).json()
    assert generate(gateway, new).status_code == 200
    assert generate(gateway, graceful["key"]).status_code == 200


def test_rpm_limit_is_a_sliding_limit_with_openai_headers(gateway: Gateway) -> None:
    key, _ = gateway.create_key(rpm=3)
    first = generate(gateway, key)
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    statuses = [generate(gateway, key) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    limited = statuses[-1]
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["x-should-retry"] == "true"
    assert 1 <= int(limited.headers["retry-after"]) <= 20


def test_images_per_day_cap(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(images_per_day=3)
    assert generate(gateway, key, n=2).status_code == 200
    refused = generate(gateway, key, n=2)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert "images per day" in refused.json()["error"]["message"]
    assert generate(gateway, key).status_code == 200
    assert gateway.usage(key_id)["images_today"] == 3


def test_concurrency_limit(gateway: Gateway) -> None:
    key, _ = gateway.create_key(max_concurrent=2)
    body = {"prompt": "slow", "simulator_fault": "delay=1"}
    responses = asyncio.run(_fire([gateway.url], key, 5, body))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 2, 429: 3}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"rate_limit_exceeded"}


def test_killed_process_reservation_comes_back(
    gateway: Gateway, redis_server, simulator: Simulator, gateway_factory
) -> None:
    """SIGKILL while a call is in flight: after its bound the reservation is released."""
    victim, survivor = doomed_gateway(gateway_factory, redis_server.url, simulator.url), gateway
    key, key_id = victim.create_key(budget_usd=str(PRICE_USD), budget_period="total")

    async def start_call() -> None:
        async with httpx.AsyncClient(timeout=30, verify=TLS) as client:
            try:
                await agenerate(client, key, victim, simulator_fault="delay=30")
            except httpx.HTTPError:
                pass

    async def kill_when_reserved() -> None:
        task = asyncio.create_task(start_call())
        await asyncio.to_thread(
            wait_until, lambda: Decimal(victim.usage(key_id)["reserved_usd"]) == PRICE_USD, 10
        )
        victim.stop(signal.SIGKILL)
        await task

    asyncio.run(kill_when_reserved())
    assert Decimal(survivor.usage(key_id)["reserved_usd"]) == PRICE_USD  # still held: the bound is not over
    wait_until(
        lambda: Decimal(survivor.usage(key_id)["reserved_usd"]) == 0,
        timeout_s=15,
        what="reservation released",
    )
    response = generate(survivor, key)
    assert response.status_code == 200
