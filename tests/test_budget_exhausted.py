"""A budget that cannot cover one more call reads as used up: in the refusal, the usage the admin
API and the console show, the alert at threshold 1 (once per period), and the metrics.

Team "tiny" of the issue: a $0.20 budget and $0.162 a call. The first call leaves $0.038, which
cannot cover another: from the next refusal on, the team is exhausted for the month although the
bar read 81%. A refusal that only calls in flight cause is not: their money comes back.

Real parts: redis-server, the simulator, gateway processes, a webhook receiver over HTTP.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.store.keyspace import TeamSpace
from tests.support import (
    Gateway,
    RedisServer,
    Simulator,
    UtcSpan,
    gateway_env,
    generate,
    metric_value,
    wait_until,
)
from tests.webhook_receiver import WebhookReceiver

SEEDREAM_40 = "doubao-seedream-4-0-250828"  # $0.162 an image
SECRET = "whsec-" + secrets.token_hex(16)


def new_team() -> str:
    return f"tiny-{secrets.token_hex(4)}"


def queued_alerts(redis: RedisServer, team: str) -> dict[str, dict[str, Any]]:
    """The team's outbox: alert id -> its stored facts (no webhook: they wait there)."""
    with redis.client() as client:
        bodies = client.hgetall(TeamSpace(team).outbox_bodies)
    return {k.decode(): json.loads(v) for k, v in bodies.items() if not k.endswith(b":attempts")}


def test_a_team_budget_that_cannot_cover_a_call_reads_as_exhausted_and_alerts_once(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    team = new_team()
    gateway.set_team(team, budget_usd="0.20", budget_period="month", alert_thresholds=[0.5, 1])
    key, _ = gateway.create_key(team=team, name="poster-bot")
    span = UtcSpan()

    assert generate(gateway, key, model=SEEDREAM_40).status_code == 200  # $0.162: 81%
    before = gateway.team_usage(team)
    assert (before["spent_usd"], before["exhausted"]) == ("0.162000", False)

    refused = generate(gateway, key, model=SEEDREAM_40)
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert message.startswith(
        f"Your team's ({team}, shared by all its keys) monthly budget of $0.200000 is used up: "
        "$0.162000 spent leaves $0.038000, less than one image at $0.162000. It resets at "
    )
    assert message.endswith(f"A gateway admin can raise it (gateway teams set {team} --budget-usd ...).")
    assert gateway.team_usage(team)["exhausted"] is True
    for _ in range(3):  # refused again and again: still one alert at 100% for the period
        assert generate(gateway, key, model=SEEDREAM_40).status_code == 429

    alerts = queued_alerts(redis_server, team)
    month = next(m for m in span.months() if f"team:m{m}:1000000" in alerts)
    assert sorted(alerts) == [f"team:m{month}:1000000", f"team:m{month}:500000"]
    full = alerts[f"team:m{month}:1000000"]
    facts = (full["spent_micros"], full["budget_micros"], full["refused_micros"])
    assert tuple(map(int, facts)) == (162000, 200000, 162000)

    # Raised, the budget covers calls again and is no longer used up.
    gateway.set_team(team, budget_usd="1")
    assert gateway.team_usage(team)["exhausted"] is False
    assert generate(gateway, key, model=SEEDREAM_40).status_code == 200


def test_a_keys_budget_spent_to_the_last_micro_dollar_or_too_short_for_one_image_is_exhausted(
    gateway: Gateway,
) -> None:
    team = new_team()
    exact, exact_id = gateway.create_key(team=team, budget_usd="0.324", budget_period="day")
    short, short_id = gateway.create_key(team=team, budget_usd="0.20", budget_period="total")
    assert generate(gateway, exact, model=SEEDREAM_40, n=2).status_code == 200
    assert gateway.usage(exact_id)["exhausted"] is True  # spent is the budget: no call can pass

    assert generate(gateway, short, model=SEEDREAM_40).status_code == 200
    assert gateway.usage(short_id)["exhausted"] is False  # not known until a call is refused
    refused = generate(gateway, short, model=SEEDREAM_40)
    assert refused.json()["error"]["message"].startswith("This key's total budget of $0.200000 is used up")
    assert f"gateway keys update {short_id} --budget-usd" in refused.json()["error"]["message"]
    assert gateway.usage(short_id)["exhausted"] is True
    assert gateway.team_usage(team)["exhausted"] is False  # the team has no budget of its own


def test_a_refusal_caused_by_calls_in_flight_is_not_exhaustion(gateway: Gateway) -> None:
    """$0.486 of budget, a call of 2 images in flight holds $0.324: the next 2-image call cannot be
    covered now, but the money comes back: not used up. Once spent, it is."""
    team = new_team()
    key, key_id = gateway.create_key(team=team, budget_usd="0.486", budget_period="month")
    slow: list[int] = []
    thread = threading.Thread(
        target=lambda: slow.append(
            generate(gateway, key, model=SEEDREAM_40, n=2, simulator_fault="delay=3").status_code
        )
    )
    thread.start()
    wait_until(lambda: gateway.usage(key_id)["reserved_usd"] == "0.324000", what="the slow call's hold")
    refused = generate(gateway, key, model=SEEDREAM_40, n=2)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith(
        "This key's monthly budget of $0.486000 cannot cover this call: $0.000000 spent and $0.324000 "
        "reserved by calls in flight leave $0.162000, and this call may cost up to $0.324000 "
        "(2 images at $0.162000)."
    )
    assert gateway.usage(key_id)["exhausted"] is False
    thread.join()
    assert slow == [200]
    assert generate(gateway, key, model=SEEDREAM_40, n=2).status_code == 429
    assert gateway.usage(key_id)["exhausted"] is False  # $0.162 left: one image still fits
    assert generate(gateway, key, model=SEEDREAM_40).status_code == 200
    assert gateway.usage(key_id)["exhausted"] is True


@pytest.fixture(scope="module")
def alerting(
    simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, WebhookReceiver]]:
    directory = tmp_path_factory.mktemp("exhausted")
    receiver = WebhookReceiver().start()
    server = RedisServer(directory / "redis").start()
    env = gateway_env(
        server.url,
        simulator.url,
        directory / "state",
        GATEWAY_ALERT_WEBHOOK_URL=receiver.url,
        GATEWAY_ALERT_WEBHOOK_SECRET=SECRET,
    )
    gw = Gateway(env, directory / "gateway.log").start()
    yield gw, receiver
    gw.stop()
    server.kill()
    receiver.stop()


def test_the_used_up_alert_reaches_the_webhook_saying_why_and_the_metrics_show_it(
    alerting: tuple[Gateway, WebhookReceiver],
) -> None:
    gw, receiver = alerting
    team = new_team()
    gw.set_team(team, budget_usd="0.20", budget_period="day", alert_thresholds=[1])
    key, _ = gw.create_key(team=team, name="poster-bot")
    span = UtcSpan()
    assert generate(gw, key, model=SEEDREAM_40).status_code == 200
    assert generate(gw, key, model=SEEDREAM_40).status_code == 429
    [post] = wait_until(receiver.received, what="the used-up alert")
    body = json.loads(post.body)
    day = body["period_start"]
    assert day in span.days()
    assert {k: body[k] for k in ("id", "threshold", "spent_usd", "budget_usd", "exhausted")} == {
        "id": f"team:{team}:d{day}:1000000",
        "threshold": 1.0,
        "spent_usd": "0.162000",
        "budget_usd": "0.200000",
        "exhausted": True,
    }
    assert body["refused_call_usd"] == "0.162000"
    assert body["text"] == (
        f"Team {team} has used up its $0.200000 daily budget: $0.162000 spent leaves $0.038000, "
        "which cannot cover a call (this one asked for up to $0.162000); its calls are refused "
        "until the budget resets or is raised."
    )

    def delivery_logged() -> bool:  # the log line names the team (the alert id of a team's does not)
        log = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
        return any(f"of team {team} delivered" in entry.get("message", "") for entry in log)

    wait_until(delivery_logged, what="the delivery's log line")

    def exhausted_metric() -> float:  # the gauge is read from Redis at most every 15 s
        return metric_value(gw.metrics(), "gateway_team_budget_exhausted", team=team)

    assert wait_until(lambda: exhausted_metric() == 1, timeout_s=40, what="the exhausted gauge")
