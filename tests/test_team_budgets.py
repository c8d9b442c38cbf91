"""Team budgets: one budget and one daily image cap shared by all of a team's keys, exactly.

A call is reserved against its key and its team in one script, so a team's budget holds across
its keys, gateway processes and replicas; the refusal says whose budget ran out.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from decimal import Decimal

import httpx

from tests.support import (
    MODEL_PRICE_MICROS,
    TLS,
    Gateway,
    Simulator,
    agenerate,
    generate,
    run_cli,
    run_clis,
)

PRICE_USD = Decimal(MODEL_PRICE_MICROS) / 1_000_000


def new_team() -> str:
    return f"team-{secrets.token_hex(4)}"


async def fire(calls: list[tuple[str, str]]) -> list[httpx.Response]:
    """Every ``(gateway url, key)`` call at once."""
    async with httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=len(calls)), verify=TLS
    ) as client:
        return await asyncio.gather(*(agenerate(client, key, url, prompt="team race") for url, key in calls))


def test_twenty_calls_from_two_keys_on_two_gateways_get_exactly_the_teams_three_images(
    gateway: Gateway, redis_server, simulator: Simulator, gateway_factory
) -> None:
    first, second = gateway, gateway_factory(redis_server.url, simulator.url)  # the session's and one more
    team = new_team()
    first.set_team(team, budget_usd=str(3 * PRICE_USD), budget_period="total")
    bot, bot_id = first.create_key(team=team, name="bot")
    batch, batch_id = first.create_key(team=team, name="batch")
    before = simulator.count()

    calls = [(gw.url, key) for gw in (first, second) for key in (bot, batch) for _ in range(5)]
    responses = asyncio.run(fire(calls))

    assert Counter(r.status_code for r in responses) == {200: 3, 429: 17}
    assert simulator.count() - before == 3  # exactly three images made upstream
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"insufficient_quota"}
    assert {r.headers["x-should-retry"] for r in refused} == {"false"}
    assert all(
        f"Your team's ({team}, shared by all its keys) total budget" in r.json()["error"]["message"]
        for r in refused
    )
    usage = second.team_usage(team)
    assert (Decimal(usage["spent_usd"]), Decimal(usage["reserved_usd"])) == (3 * PRICE_USD, 0)
    assert usage["remaining_usd"] == "0.000000" and usage["period"] == "total"
    spent = Decimal(first.usage(bot_id)["spent_usd"]) + Decimal(first.usage(batch_id)["spent_usd"])
    assert spent == 3 * PRICE_USD  # the keys' own counters agree with the team's


def test_the_refusal_names_the_budget_that_ran_out(gateway: Gateway) -> None:
    team = new_team()
    gateway.set_team(team, budget_usd=str(2 * PRICE_USD))
    small, _ = gateway.create_key(team=team, budget_usd=str(PRICE_USD), budget_period="month")
    other, _ = gateway.create_key(team=team)

    assert generate(gateway, small).status_code == 200
    key_refusal = generate(gateway, small).json()["error"]["message"]
    assert key_refusal.startswith("This key's monthly budget of $0.135000 is used up")
    assert generate(gateway, other).status_code == 200
    team_refusal = generate(gateway, other).json()["error"]["message"]
    assert team_refusal.startswith(
        f"Your team's ({team}, shared by all its keys) monthly budget of $0.270000"
    )
    assert "It resets at" in team_refusal

    # A changed budget applies from the next call; null removes it.
    gateway.set_team(team, budget_usd=str(3 * PRICE_USD))
    assert generate(gateway, other).status_code == 200
    assert generate(gateway, other).status_code == 429
    assert gateway.set_team(team, budget_usd=None)["budget_usd"] is None
    assert generate(gateway, other).status_code == 200


def test_a_teams_daily_image_cap_counts_every_key(gateway: Gateway) -> None:
    team = new_team()
    gateway.set_team(team, images_per_day=3)
    first, _ = gateway.create_key(team=team)
    second, _ = gateway.create_key(team=team)
    assert generate(gateway, first, n=2).status_code == 200
    assert generate(gateway, second).status_code == 200
    refused = generate(gateway, second)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith(
        f"Your team's ({team}, shared by all its keys) cap of 3 images"
    )
    assert gateway.team_usage(team)["images_today"] == 3


def test_the_team_api_sets_shows_lists_and_refuses_bad_values(gateway: Gateway) -> None:
    team = new_team()
    settings = gateway.set_team(team, budget_usd=12.5, budget_period="day", alert_thresholds=[0.8, "0.5", 1])
    # This gateway has no webhook: the answer says its thresholds' alerts will only wait in Redis.
    assert settings.pop("warning").startswith("GATEWAY_ALERT_WEBHOOK_URL is not set")
    assert settings == {
        "object": "team",
        "team": team,
        "budget_usd": "12.500000",
        "budget_period": "day",
        "images_per_day": None,
        "alert_thresholds": [0.5, 0.8, 1.0],
        "keys": 0,
    }
    gateway.create_key(team=team)
    with gateway.admin() as admin:
        assert admin.get(f"/admin/v1/teams/{team}").json()["keys"] == 1
        listed = {t["team"]: t for t in admin.get("/admin/v1/teams").json()["data"]}
        assert listed[team]["usage"]["remaining_usd"] == "12.500000"
        usage = admin.get(f"/admin/v1/teams/{team}/usage").json()
        assert set(usage) == {
            "team", "period", "budget_usd", "spent_usd", "reserved_usd", "remaining_usd",
            "images_today", "inflight", "resets_at", "exhausted",
        }  # fmt: skip
        assert (usage["period"], usage["remaining_usd"], usage["exhausted"]) == ("day", "12.500000", False)
        for body, field in (
            ({"budget_usd": "-1"}, "budget_usd"),
            ({"budget_usd": "0.0000001"}, "budget_usd"),
            ({"budget_period": "week"}, "budget_period"),
            ({"images_per_day": -1}, "images_per_day"),
            ({"alert_thresholds": [0]}, "alert_thresholds"),
            ({"alert_thresholds": [1.5]}, "alert_thresholds"),
            ({"alert_thresholds": "0.5"}, "alert_thresholds"),
            ({"budget": "5"}, "budget"),
        ):
            response = admin.put(f"/admin/v1/teams/{team}", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["param"].split(".")[0] == field, (body, response.json())
        assert admin.put("/admin/v1/teams/bad{name}", json={"budget_usd": "1"}).status_code == 400
        assert admin.get(f"/admin/v1/teams/{new_team()}").status_code == 404
        assert admin.get(f"/admin/v1/teams/{new_team()}/usage").status_code == 404
    unauthenticated = httpx.put(
        f"{gateway.url}/admin/v1/teams/{team}", json={"budget_usd": "1"}, timeout=10, verify=TLS
    )
    assert unauthenticated.status_code == 401
    assert admin_settings_unchanged(gateway, team)


def admin_settings_unchanged(gateway: Gateway, team: str) -> bool:
    with gateway.admin() as admin:
        return admin.get(f"/admin/v1/teams/{team}").json()["budget_usd"] == "12.500000"


def test_keys_take_alert_thresholds_too(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        created = admin.post(
            "/admin/v1/keys", json={"team": new_team(), "name": "alerts", "alert_thresholds": [0.9, 0.5]}
        )
        assert created.status_code == 201 and created.json()["alert_thresholds"] == [0.5, 0.9]
        key_id = created.json()["key_id"]
        cleared = admin.patch(f"/admin/v1/keys/{key_id}", json={"alert_thresholds": None})
        assert cleared.json()["alert_thresholds"] is None
        refused = admin.patch(f"/admin/v1/keys/{key_id}", json={"alert_thresholds": [2]})
        assert refused.status_code == 400 and refused.json()["error"]["param"].startswith("alert_thresholds")


def test_the_cli_sets_lists_shows_and_reports_a_teams_usage(gateway: Gateway, redis_server) -> None:
    team = new_team()
    done = run_cli(
        redis_server.url, "teams", "set", team, "--budget-usd", "2", "--alert-thresholds", "0.5,1", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alert_thresholds"] == [0.5, 1.0]
    key, _ = gateway.create_key(team=team)
    assert generate(gateway, key).status_code == 200
    usage, listed, shown, missing, bad = run_clis(  # reads, and a refusal that changes nothing
        redis_server.url,
        ["teams", "usage", team, "--json"],
        ["teams", "list"],
        ["teams", "show", team],
        ["teams", "show", new_team()],
        ["teams", "set", team, "--budget-period", "week"],
    )
    assert json.loads(usage.stdout)["spent_usd"] == "0.135000"
    row = next(line for line in listed.stdout.splitlines() if line.startswith(team))
    assert "2.000000" in row and "0.135000" in row and "1.865000" in row  # budget, spent, remaining
    assert "budget_usd" in shown.stdout and "0.5" in shown.stdout
    assert missing.returncode != 0 and "no team" in missing.stderr
    assert bad.returncode != 0


def test_a_teams_daily_budget_starts_again_each_utc_day_like_a_keys(gateway: Gateway, redis_server) -> None:
    """Yesterday's team spend is in yesterday's counter: today's period starts from zero."""
    from datetime import UTC, datetime

    from gateway.money.periods import Periods
    from gateway.store.keyspace import TeamSpace

    team = new_team()
    gateway.set_team(team, budget_usd=str(PRICE_USD), budget_period="day")
    key, _ = gateway.create_key(team=team)
    yesterday = Periods.at(datetime.now(UTC).timestamp() - 86400).day
    with redis_server.client() as client:
        client.set(TeamSpace(team).spent(f"d{yesterday}"), 10 * MODEL_PRICE_MICROS)
    assert gateway.team_usage(team)["spent_usd"] == "0.000000"
    assert generate(gateway, key).status_code == 200  # the whole day's budget is there
    assert generate(gateway, key).status_code == 429
