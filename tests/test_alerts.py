"""Budget alerts delivered to a webhook: real gateways, a real Redis, the simulator, and a real
HTTP receiver (tests/webhook_receiver.py) that records every POST and fails when told to.

The module shares one Redis, one receiver and one gateway of two workers (``alerting``); each test
has a team of its own and waits until that team's outbox is empty, after which nothing is left
that could be sent again: so "exactly one POST" holds, and no alert of one test reaches the
receiver's record of the next (cleared for each test). Counters are compared before and after.
The restart test has a Redis of its own: it stops its gateway and edits the store under it.
Conditions are waited on (``wait_until``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from gateway.store.keyspace import ALERT_TEAMS, TeamSpace
from tests.support import (
    MODEL_PRICE_MICROS,
    Gateway,
    RedisServer,
    Simulator,
    UtcSpan,
    gateway_env,
    generate,
    metric_value,
    wait_until,
)
from tests.webhook_receiver import Received, WebhookReceiver

PRICE = Decimal(MODEL_PRICE_MICROS) / 1_000_000
SECRET = "whsec-" + secrets.token_hex(16)
OUTCOMES = ("delivered", "failed", "expired")


def webhook(receiver: WebhookReceiver) -> dict[str, str]:
    return {"GATEWAY_ALERT_WEBHOOK_URL": receiver.url, "GATEWAY_ALERT_WEBHOOK_SECRET": SECRET}


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


@pytest.fixture
def receiver(receiver_server: WebhookReceiver) -> WebhookReceiver:
    """The module's receiver, answering 200 and with no record of earlier tests."""
    receiver_server.reset()
    return receiver_server


@dataclass
class Alerting:
    gateway: Gateway
    server: RedisServer
    redis: Any  # a client of ``server``


@pytest.fixture(scope="module")
def alerting(
    simulator: Simulator, receiver_server: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Alerting]:
    """The module's Redis and its gateway of two workers, the webhook configured."""
    directory = tmp_path_factory.mktemp("alerts")
    server = RedisServer(directory / "redis").start()
    env = gateway_env(
        server.url, simulator.url, directory / "state", GATEWAY_WORKERS="2", **webhook(receiver_server)
    )
    gateway = Gateway(env, directory / "gateway.log")
    try:
        gateway.start()
        with server.client() as client:
            yield Alerting(gateway, server, client)
    finally:
        gateway.stop()
        server.kill()


@pytest.fixture
def own_redis(
    redis_factory: Callable[..., RedisServer],
    simulator: Simulator,
    gateway_factory: Callable[..., Gateway],
    receiver: WebhookReceiver,
) -> Callable[..., tuple[Gateway, Any]]:
    """Gateways with the webhook configured on a Redis of this test's own (started once)."""
    servers: list[RedisServer] = []

    def start(**env: str) -> tuple[Gateway, Any]:
        if not servers:
            servers.append(redis_factory())
        return gateway_factory(servers[0].url, simulator.url, **webhook(receiver), **env), servers[0].client()

    return start


def deliveries(*gateways: Gateway) -> dict[str, float]:
    """``gateway_alert_deliveries_total`` by outcome, summed over ``gateways``."""
    texts = [gw.metrics() for gw in gateways]
    return {
        o: sum(metric_value(t, "gateway_alert_deliveries_total", outcome=o) for t in texts) for o in OUTCOMES
    }


def new_team() -> str:
    return f"team-{secrets.token_hex(4)}"


def one_alert_team(gw: Gateway) -> tuple[str, str]:
    """A new team whose first call reaches its one alert threshold (10% of ten images); (team, key)."""
    team = new_team()
    gw.set_team(team, budget_usd=str(10 * PRICE), alert_thresholds=[0.1])
    return team, gw.create_key(team=team)[0]


def outbox_empty(redis: Any, team: str) -> bool:
    space = TeamSpace(team)
    return redis.zcard(space.outbox) == 0 and redis.hlen(space.outbox_bodies) == 0


def signed(post: Received) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), post.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(post.headers["x-gateway-signature"], expected)


def delivered(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    return [json.loads(p.body) for p in receiver.received() if p.answered == 200]


def test_a_teams_thresholds_are_each_posted_once_signed_with_the_facts(
    alerting: Alerting, receiver: WebhookReceiver
) -> None:
    gw, redis = alerting.gateway, alerting.redis
    team = new_team()
    gw.set_team(team, budget_usd=str(2 * PRICE), budget_period="month", alert_thresholds=[0.5, 1.0])
    key, _ = gw.create_key(team=team, name="poster-bot")
    span = UtcSpan()

    assert generate(gw, key).status_code == 200
    wait_until(lambda: len(receiver.received()) == 1, what="the 50% alert")
    assert generate(gw, key).status_code == 200
    assert generate(gw, key).status_code == 429  # the budget is spent: no charge, no third alert
    wait_until(lambda: len(receiver.received()) == 2 and outbox_empty(redis, team), what="the 100% alert")

    posts = receiver.received()
    assert len(posts) == 2 and all(signed(p) for p in posts)
    assert {p.headers["content-type"] for p in posts} == {"application/json"}
    assert {p.path for p in posts} == {"/hooks/budget"}
    half, full = sorted((json.loads(p.body) for p in posts), key=lambda b: b["threshold"])
    month = half["period_start"][:7]
    assert month in span.months()
    assert half == {
        "id": f"team:{team}:m{month}:500000",
        "type": "budget.threshold",
        "scope": "team",
        "team": team,
        "threshold": 0.5,
        "spent_usd": "0.135000",
        "budget_usd": "0.270000",
        "period": "month",
        "period_start": f"{month}-01",
        "at": half["at"],
        "text": f"Team {team} has spent $0.135000 of its $0.270000 monthly budget (50%).",
    }
    assert abs(datetime.fromisoformat(half["at"]).timestamp() - time.time()) < 60
    assert half["at"].endswith("Z")
    assert (full["id"], full["threshold"], full["spent_usd"]) == (
        f"team:{team}:m{month}:1000000",
        1.0,
        "0.270000",
    )
    assert full["text"] == f"Team {team} has spent $0.270000 of its $0.270000 monthly budget (100%)."
    assert redis.sismember(ALERT_TEAMS, team) == 0  # the index forgets a team with nothing pending


def test_a_keys_threshold_is_posted_with_the_key(alerting: Alerting, receiver: WebhookReceiver) -> None:
    gw, redis = alerting.gateway, alerting.redis
    team = new_team()
    key, key_id = gw.create_key(
        team=team, name="batch", budget_usd=str(4 * PRICE), budget_period="day", alert_thresholds=[0.25, 0.75]
    )
    span = UtcSpan()

    assert generate(gw, key).status_code == 200
    wait_until(lambda: len(receiver.received()) == 1 and outbox_empty(redis, team), what="the key's alert")
    [post] = receiver.received()
    body = json.loads(post.body)
    day = body["period_start"]
    assert day in span.days()
    assert signed(post)
    assert {k: body[k] for k in ("id", "scope", "team", "key_id", "key_name", "threshold", "period")} == {
        "id": f"key:{key_id}:d{day}:250000",
        "scope": "key",
        "team": team,
        "key_id": key_id,
        "key_name": "batch",
        "threshold": 0.25,
        "period": "day",
    }
    assert (body["period_start"], body["spent_usd"], body["budget_usd"]) == (day, "0.135000", "0.540000")
    assert body["text"] == (
        f"Key batch of team {team} has spent $0.135000 of its $0.540000 daily budget (25%)."
    )


def test_a_failing_receiver_gets_the_same_bytes_again_within_seconds_until_it_answers_2xx(
    alerting: Alerting, receiver: WebhookReceiver
) -> None:
    gw, redis = alerting.gateway, alerting.redis
    team, key = one_alert_team(gw)
    before = deliveries(gw)
    receiver.fail(2, status=500)

    assert generate(gw, key).status_code == 200
    wait_until(lambda: outbox_empty(redis, team), timeout_s=30, what="delivery after two failures")

    posts = receiver.received()
    assert [p.answered for p in posts] == [500, 500, 200]
    assert len({p.body for p in posts}) == 1 and all(signed(p) for p in posts)  # identical retries
    first_gap, second_gap = posts[1].at - posts[0].at, posts[2].at - posts[1].at
    assert 1.5 <= first_gap <= 6, first_gap  # first retry after 2 s (+ a 1 s poll, + a busy machine)
    assert 3.5 <= second_gap <= 9, second_gap  # then 4 s
    after = deliveries(gw)
    assert {o: after[o] - before[o] for o in OUTCOMES} == {"delivered": 1, "failed": 2, "expired": 0}


def test_a_restart_loses_nothing_even_without_the_index_and_drops_what_is_too_old(
    own_redis: Callable[..., tuple[Gateway, Any]], receiver: WebhookReceiver
) -> None:
    first, redis = own_redis()
    team, key = one_alert_team(first)
    receiver.fail(1000, status=503)
    assert generate(first, key).status_code == 200
    wait_until(lambda: receiver.received(), what="a first, failed attempt")
    first.stop()

    # The settler's index entry is lost (as if its SADD never happened); an alert queued four days
    # ago, while no webhook was set, waits in the same outbox.
    redis.delete(ALERT_TEAMS)
    space = TeamSpace(team)
    old = {
        "scope": "team",
        "team": team,
        "key_id": "",
        "key_name": "",
        "threshold_ppm": 200000,
        "spent_micros": 1,
        "budget_micros": 5,
        "period": "month",
        "period_start": "2020-01-01",
        "at_ms": int((time.time() - 4 * 86400) * 1000),
    }
    redis.hset(space.outbox_bodies, "team:m2020-01:200000", json.dumps(old))
    redis.zadd(space.outbox, {"team:m2020-01:200000": old["at_ms"]})
    receiver.fail(0)
    attempts_before = len(receiver.received())

    second, _ = own_redis()
    wait_until(lambda: outbox_empty(redis, team), timeout_s=30, what="delivery by the restarted gateway")
    after = receiver.received()[attempts_before:]
    assert [p.answered for p in after] == [200]
    assert json.loads(after[0].body)["threshold"] == 0.1  # the old one was never sent
    counts = deliveries(second)
    assert (counts["expired"], counts["delivered"]) == (1, 1)


def test_two_gateways_of_two_workers_each_send_each_alert_once(
    alerting: Alerting,
    receiver: WebhookReceiver,
    gateway_factory: Callable[..., Gateway],
    simulator: Simulator,
) -> None:
    one, redis = alerting.gateway, alerting.redis
    two = gateway_factory(alerting.server.url, simulator.url, GATEWAY_WORKERS="2", **webhook(receiver))
    before = deliveries(one, two)
    team = new_team()
    thresholds = [0.25, 0.5, 0.75, 1.0]
    one.set_team(team, budget_usd=str(4 * PRICE), budget_period="total", alert_thresholds=thresholds)
    keys = [one.create_key(team=team)[0], two.create_key(team=team)[0]]

    for i in range(4):
        assert generate((one, two)[i % 2], keys[i % 2]).status_code == 200
    wait_until(
        lambda: len(receiver.received()) >= 4 and outbox_empty(redis, team), timeout_s=30, what="4 alerts"
    )

    posts = receiver.received()
    ids = sorted(json.loads(p.body)["id"] for p in posts)
    assert ids == sorted(f"team:{team}:total:{ppm}" for ppm in (250000, 500000, 750000, 1000000))
    assert all(signed(p) and p.answered == 200 for p in posts)
    assert deliveries(one, two)["delivered"] - before["delivered"] == 4
