"""With no webhook, queued budget alerts are not invisible: ``gateway alerts list`` shows them,
``gateway_alerts_pending`` counts them, and setting thresholds or starting a gateway says that
nothing will send them. And a fresh gateway's counters are on the page at 0, not missing.

Real parts: redis-server, the simulator, gateway processes without GATEWAY_ALERT_WEBHOOK_URL, the CLI.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gateway.money.pricing import DEFAULT_PRICES_USD
from tests.support import (
    ADMIN_TOKEN,
    MODEL,
    Gateway,
    RedisServer,
    Simulator,
    UtcSpan,
    gateway_env,
    generate,
    metric_value,
    run_cli,
    wait_until,
)


@dataclass
class Quiet:
    gateway: Gateway
    redis: RedisServer


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Quiet]:
    """A gateway of its own Redis, with no webhook, and a team registered before it started."""
    directory = tmp_path_factory.mktemp("quiet")
    redis = RedisServer(directory / "redis").start()
    done = run_cli(redis.url, "teams", "set", "early", "--budget-usd", "10")
    assert done.returncode == 0, done.stderr
    gateway = Gateway(gateway_env(redis.url, simulator.url, directory / "state"), directory / "gw.log")
    yield Quiet(gateway.start(), redis)
    gateway.stop()
    redis.kill()


def test_queued_alerts_are_listed_counted_and_warned_about(quiet: Quiet) -> None:
    gw = quiet.gateway
    team = f"quiet-{secrets.token_hex(3)}"
    thresholds = ["--budget-usd", "0.27", "--alert-thresholds", "0.5,1"]
    done = run_cli(quiet.redis.url, "teams", "set", team, *thresholds)
    assert done.returncode == 0, done.stderr
    assert "GATEWAY_ALERT_WEBHOOK_URL is not set" in done.stderr and "gateway alerts list" in done.stderr
    key, _ = gw.create_key(team=team, name="poster-bot")
    span = UtcSpan()
    assert generate(gw, key).status_code == 200  # 50%
    assert generate(gw, key).status_code == 200  # 100%

    listed = run_cli(quiet.redis.url, "alerts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    alerts = json.loads(listed.stdout)
    month = next(m for m in span.months() if f"team:{team}:m{m}:500000" in [a["id"] for a in alerts])
    assert [(a["id"], a["team"], a["threshold"], a["spent_usd"], a["attempts"]) for a in alerts] == [
        (f"team:{team}:m{month}:500000", team, 0.5, "0.135000", 0),
        (f"team:{team}:m{month}:1000000", team, 1.0, "0.270000", 0),
    ]
    table = run_cli(quiet.redis.url, "alerts", "list", "--team", team)
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 3  # header and two
    assert f"team:{team}:m{month}:1000000" in table.stdout
    assert "GATEWAY_ALERT_WEBHOOK_URL is not set" in table.stderr

    pending = wait_until(
        lambda: metric_value(gw.metrics(), "gateway_alerts_pending") == 2,
        timeout_s=40,
        what="gateway_alerts_pending counting both (read from Redis at most every 15 s)",
    )
    assert pending


def test_thresholds_set_through_the_api_on_a_gateway_with_no_webhook_carry_a_warning(quiet: Quiet) -> None:
    with quiet.gateway.admin() as admin:
        body = admin.put("/admin/v1/teams/warned", json={"budget_usd": "5", "alert_thresholds": [0.8]}).json()
        plain = admin.put("/admin/v1/teams/unwarned", json={"budget_usd": "5"}).json()
    assert body["alert_thresholds"] == [0.8]
    assert body["warning"].startswith("GATEWAY_ALERT_WEBHOOK_URL is not set")
    assert "warning" not in plain


def test_a_gateway_started_with_thresholds_and_no_webhook_says_so_once_at_start(
    quiet: Quiet, simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    run_cli(quiet.redis.url, "teams", "set", "starting", "--alert-thresholds", "0.9", "--budget-usd", "1")
    again = gateway_factory(quiet.redis.url, simulator.url)
    warnings = [
        json.loads(line)["message"]
        for line in again.log().splitlines()
        if line.startswith("{") and "GATEWAY_ALERT_WEBHOOK_URL is not set" in line
    ]
    assert len(warnings) == 1 and "starting" in warnings[0] and "gateway alerts list" in warnings[0]


def test_a_fresh_gateways_counters_are_exported_at_zero(quiet: Quiet) -> None:
    """Before any call: upstream errors per model and reason, images and spend of the teams it
    knows, refusals of unknown callers and admin sign-in failures read 0, not "No data"."""
    page = quiet.gateway.metrics()
    for model in DEFAULT_PRICES_USD:
        for reason in ("timeout", "5xx", "auth", "content_safety"):
            assert f'gateway_upstream_errors_total{{model="{model}",reason="{reason}"}} 0.0' in page
        assert f'gateway_spend_usd_total{{model="{model}",team="early"}} 0.0' in page
        assert f'gateway_images_total{{model="{model}",team="early"}} 0.0' in page
    assert 'gateway_rejections_total{reason="invalid_key",team="unknown"}' in page
    assert 'gateway_admin_auth_failures_total{reason="invalid_token"} 0.0' in page
    assert ADMIN_TOKEN not in page and MODEL in page
