"""What ops sees on /metrics agrees with what finance sees in the ledger, with one worker or two.

Each test starts its own gateway (fresh counters) and its own teams, drives a mixed run through
it (successes, partial deliveries, every kind of upstream failure, every kind of refusal), then
compares the page with the ledger's raw records to the micro-dollar.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    ADMIN_TOKEN,
    MODEL,
    TLS,
    UPSTREAM_KEY,
    Gateway,
    RedisServer,
    Simulator,
    agenerate,
    generate,
    metric_value,
    wait_until,
)

OTHER_MODEL = "doubao-seedream-4-0-250828"
BAD_KEY = "sk-gw-aaaaaaaaaaaa_" + "x" * 43


@dataclass
class Mix:
    """A mixed run's teams, keys, and what the callers got."""

    team_a: str
    team_b: str
    prompt: str
    key_ids: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)


def _calls(mix: Mix, keys: dict[str, str]) -> list[tuple[str, str, dict[str, Any], int]]:
    """(team, key, body, expected status) for every kind of outcome the metrics distinguish."""
    a, b, prompt = mix.team_a, mix.team_b, mix.prompt

    def body(model: str = MODEL, fault: str = "", **extra: Any) -> dict[str, Any]:
        return {"model": model, "prompt": prompt, **({"simulator_fault": fault} if fault else {}), **extra}

    return [
        (a, keys["a"], body(), 200),
        (a, keys["a"], body(n=3), 200),
        (b, keys["b"], body(OTHER_MODEL, n=2), 200),
        (b, keys["b"], body(n=3, fault="images=1"), 200),
        (a, keys["a"], body(fault="status=500"), 502),
        (a, keys["a"], body(fault="status=401"), 502),
        (b, keys["b"], body(OTHER_MODEL, fault="status=402"), 502),
        (a, keys["a"], body(fault="delay=3"), 504),
        (b, keys["b"], body(fault="garbage=1"), 502),
        (a, keys["a"], body(fault="drop=1"), 502),
        (a, keys["budget"], body(), 429),
        (a, keys["a"], body(n=11), 400),
        (a, keys["a"], body("dall-e-9"), 404),
        ("unknown", BAD_KEY, body(), 401),
    ]


def run_mix(gw: Gateway) -> Mix:
    tag = secrets.token_hex(4)
    mix = Mix(f"ops-{tag}-a", f"ops-{tag}-b", f"a prompt nobody else sends {tag}")
    keys: dict[str, str] = {}
    for name, team, limits in (
        ("a", mix.team_a, {}),
        ("b", mix.team_b, {}),
        ("budget", mix.team_a, {"budget_usd": "0", "budget_period": "total"}),
        ("rpm", mix.team_b, {"rpm": 1}),
    ):
        secret, key_id = gw.create_key(team=team, **limits)
        keys[name] = secret
        mix.key_ids.append(key_id)
        mix.secrets.append(secret)
    calls = _calls(mix, keys)

    async def go() -> None:
        # A new connection per request, all at once: with two workers both get some.
        async with httpx.AsyncClient(
            base_url=gw.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0), verify=TLS
        ) as client:
            responses = await asyncio.gather(*(agenerate(client, key, **body) for _, key, body, _ in calls))
            rpm = [await agenerate(client, keys["rpm"], prompt=mix.prompt) for _ in range(2)]
        for (team, _, body, expected), response in zip(calls, responses, strict=True):
            assert response.status_code == expected, (body, response.text)
            mix.statuses[(team, expected)] += 1
        assert [r.status_code for r in rpm] == [200, 429]
        mix.statuses[(mix.team_b, 200)] += 1
        mix.statuses[(mix.team_b, 429)] += 1

    asyncio.run(go())
    return mix


EXPECTED_REJECTIONS = {
    "budget_exceeded": "a",
    "bad_request": "a",
    "model_not_found": "a",
    "rate_limited": "b",
}
EXPECTED_UPSTREAM_ERRORS = {
    (MODEL, "5xx"): 1,
    (MODEL, "auth"): 1,
    (MODEL, "timeout"): 1,
    (MODEL, "bad_response"): 1,
    (MODEL, "connect"): 1,
    (OTHER_MODEL, "insufficient_balance"): 1,
}


def ledger_records(gw: Gateway, teams: set[str]) -> list[dict[str, Any]]:
    today = datetime.now(UTC).date()
    params = {"start": str(today - timedelta(days=1)), "end": str(today + timedelta(days=1))}
    with gw.admin() as admin:
        response = admin.get("/admin/v1/usage", params=params)
    assert response.status_code == 200, response.text
    return [r for r in map(json.loads, response.text.splitlines()) if r["team"] in teams]


def assert_metrics_match_ledger(gw: Gateway, mix: Mix, page: str, *more_teams: str) -> None:
    teams = {mix.team_a, mix.team_b, *more_teams}
    records = ledger_records(gw, teams)
    images: dict[tuple[str, str], int] = defaultdict(int)
    spend: dict[tuple[str, str], int] = defaultdict(int)
    for rec in records:
        images[(rec["team"], rec["model"])] += rec["images"]
        spend[(rec["team"], rec["model"])] += rec["charge_micros"]
    assert images[(mix.team_b, MODEL)] == 2 and images[(mix.team_b, OTHER_MODEL)] == 2  # n=3 got 1; rpm 1
    assert images[(mix.team_a, MODEL)] >= 4
    for team in teams:
        for model in (MODEL, OTHER_MODEL):
            labels = {"team": team, "model": model}
            assert metric_value(page, "gateway_images_total", **labels) == images[(team, model)], labels
            usd = metric_value(page, "gateway_spend_usd_total", **labels)
            assert round(usd * 1_000_000) == spend[(team, model)], (labels, usd)
        # Every request not refused before the upstream is in the ledger, once.
        answered = metric_value(page, "gateway_requests_total", team=team)
        refused = metric_value(page, "gateway_rejections_total", team=team)
        assert answered - refused == sum(1 for r in records if r["team"] == team), team
    for (team, status), count in mix.statuses.items():
        assert metric_value(page, "gateway_requests_total", team=team, status=str(status)) == count, (
            team,
            status,
        )
    for reason, team in EXPECTED_REJECTIONS.items():
        name = mix.team_a if team == "a" else mix.team_b
        assert metric_value(page, "gateway_rejections_total", team=name, reason=reason) == 1, reason
    assert metric_value(page, "gateway_rejections_total", team="unknown", reason="invalid_key") == 1
    for (model, reason), count in EXPECTED_UPSTREAM_ERRORS.items():
        assert metric_value(page, "gateway_upstream_errors_total", model=model, reason=reason) == count, (
            reason
        )
    assert metric_value(page, "gateway_upstream_errors_total") == sum(EXPECTED_UPSTREAM_ERRORS.values())
    assert metric_value(page, "gateway_inflight_requests") == 0


def assert_labels_are_bounded(page: str, mix: Mix) -> None:
    assert 'model="other"' in page
    assert metric_value(page, "gateway_requests_total", model="other", status="404") == 1
    for secret in ("dall-e-9", mix.prompt, UPSTREAM_KEY, ADMIN_TOKEN, *mix.key_ids, *mix.secrets):
        assert secret not in page
    buckets = {
        sample.labels["le"]
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "gateway_request_duration_seconds_bucket"
    }
    finite = sorted(float(le) for le in buckets if le != "+Inf")
    assert finite[0] <= 0.01 and finite[-1] >= 120 and 60 in finite and 10 < finite[finite.index(60) - 1] < 60


def test_counters_agree_with_the_ledger_and_labels_stay_bounded(
    redis_server: RedisServer, simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    gw = gateway_factory(redis_server.url, simulator.url, GATEWAY_UPSTREAM_TIMEOUT_S="1")
    mix = run_mix(gw)
    page = gw.metrics()
    assert_metrics_match_ledger(gw, mix, page)
    assert_labels_are_bounded(page, mix)
    assert metric_value(page, "gateway_build_info") == 1


# -- several workers ---------------------------------------------------------------------------------


def multiproc_dir(gw: Gateway) -> Path:
    dirs = list((Path(gw.env["GATEWAY_STATE_DIR"]) / "metrics").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def per_worker(gw: Gateway, prefix: str, metric: str) -> dict[int, float]:
    """pid -> that worker's own value of ``metric``, read from its multiprocess file."""
    out: dict[int, float] = {}
    for path in multiproc_dir(gw).glob(f"{prefix}_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        values = MmapedDict.read_all_values_from_file(str(path))
        out[pid] = sum(value for key, value, _, _ in values if json.loads(key)[1] == metric)
    return out


def served_by_both(gw: Gateway, key: str) -> bool:
    """Some requests reached each of two workers (sending more until they did)."""
    counts = per_worker(gw, "counter", "gateway_requests_total")
    if sum(1 for v in counts.values() if v > 0) >= 2:
        return True

    async def more() -> None:
        async with httpx.AsyncClient(
            base_url=gw.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0), verify=TLS
        ) as c:
            body = {"prompt": "spread", "simulator_fault": "delay=0.2"}
            await asyncio.gather(*(agenerate(c, key, **body) for _ in range(8)))

    asyncio.run(more())
    return False


def test_two_workers_aggregate_to_the_ledger(
    redis_server: RedisServer, simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    gw = gateway_factory(redis_server.url, simulator.url, GATEWAY_UPSTREAM_TIMEOUT_S="1", GATEWAY_WORKERS="2")
    mix = run_mix(gw)
    spread_team = mix.team_a + "-spread"
    spread_key, _ = gw.create_key(team=spread_team)
    wait_until(lambda: served_by_both(gw, spread_key), timeout_s=60, what="requests on both workers")
    page = gw.metrics()
    answered = per_worker(gw, "counter", "gateway_requests_total")
    assert sum(answered.values()) == metric_value(page, "gateway_requests_total"), (
        "the page sums every worker"
    )
    assert_metrics_match_ledger(gw, mix, page, spread_team)
    assert_labels_are_bounded(page, mix)


def _metric_series(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_a_killed_worker_leaves_no_phantom_inflight_and_counters_never_go_back(
    redis_server: RedisServer, simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    gw = gateway_factory(redis_server.url, simulator.url, GATEWAY_WORKERS="2")
    key, _ = gw.create_key(team="ops-kill")
    wait_until(lambda: served_by_both(gw, key), timeout_s=60, what="requests on both workers")
    before = _metric_series(gw.metrics())

    outcome: list[Any] = []

    async def slow_calls() -> None:
        async with httpx.AsyncClient(
            base_url=gw.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0), verify=TLS
        ) as c:
            body = {"prompt": "in flight", "simulator_fault": "delay=4"}
            outcome.extend(
                await asyncio.gather(*(agenerate(c, key, **body) for _ in range(10)), return_exceptions=True)
            )

    thread = threading.Thread(target=lambda: asyncio.run(slow_calls()))
    thread.start()
    try:
        wait_until(lambda: metric_value(gw.metrics(), "gateway_inflight_requests") == 10, what="10 in flight")
        inflight = per_worker(gw, "gauge_livesum", "gateway_inflight_requests")
        victim = max(inflight, key=lambda pid: inflight[pid])
        assert inflight[victim] > 0
        workers_before = set(inflight)
        os.kill(victim, signal.SIGKILL)

        last = before

        def settled() -> bool:
            nonlocal last
            page = gw.metrics()
            now = _metric_series(page)
            for series, value in last.items():
                assert now.get(series, 0) >= value, f"{series} went back from {value} to {now.get(series)}"
            last = now
            restarted = set(per_worker(gw, "gauge_livesum", "gateway_inflight_requests")) - workers_before
            return (
                metric_value(page, "gateway_inflight_requests") == 0
                and bool(restarted)
                and not thread.is_alive()
            )

        wait_until(settled, timeout_s=40, interval_s=0.2, what="in-flight back to 0 and a new worker")
    finally:
        thread.join(40)
    assert not (multiproc_dir(gw) / f"gauge_livesum_{victim}.db").exists()
    assert (multiproc_dir(gw) / f"counter_{victim}.db").exists(), "a dead worker's counts are kept"
    errors = [o for o in outcome if isinstance(o, Exception)]
    ok = [o for o in outcome if not isinstance(o, Exception) and o.status_code == 200]
    # The killed worker's callers saw their connection drop; the other worker's got their images.
    assert errors and len(errors) + len(ok) == 10, outcome
    after = gw.metrics()
    assert metric_value(after, "gateway_requests_total", team="ops-kill", status="200") >= len(
        ok
    ) + before.get(("gateway_requests_total", (("model", MODEL), ("status", "200"), ("team", "ops-kill"))), 0)
    response = generate(gw, key, prompt="after")
    assert response.status_code == 200


def test_budget_gauge_is_there_after_a_restart_for_every_key_with_a_budget(
    redis_factory, simulator: Simulator, gateway_factory
) -> None:
    """Ops restart the gateway: the near-budget alert and the budget panel must not go blind
    until each key is used again."""
    redis = redis_factory()
    gw = gateway_factory(redis.url, simulator.url)
    used_key, used_id = gw.create_key(team="gauge", name="used", budget_usd="1", budget_period="month")
    gw.create_key(team="gauge", name="idle", budget_usd="5", budget_period="day")
    gw.create_key(team="gauge", name="unlimited")
    for _ in range(3):
        response = generate(gw, used_key)
        assert response.status_code == 200
    spent = Decimal(gw.usage(used_id)["spent_usd"])
    gw.stop()
    gw.start()

    samples = {
        sample.labels["key_name"]: sample.value
        for family in text_string_to_metric_families(gw.metrics())
        for sample in family.samples
        if sample.name == "gateway_budget_used_ratio" and sample.labels.get("team") == "gauge"
    }
    assert samples == {"used": pytest.approx(float(spent / 1)), "idle": 0.0}


def test_budget_gauge_reads_the_current_period_so_a_reset_shows_zero(gateway: Gateway, redis_server) -> None:
    """Yesterday's spend of a daily budget is not today's: the gauge reads today's counter."""
    from gateway.money.budget_gauge import used_ratios
    from gateway.money.periods import Periods
    from gateway.store.keyspace import KeySpace

    team = f"reset-{secrets.token_hex(3)}"
    _, daily = gateway.create_key(team=team, name="daily", budget_usd="2", budget_period="day")
    _, total = gateway.create_key(team=team, name="total", budget_usd="4", budget_period="total")
    yesterday = Periods.at(datetime.now(UTC).timestamp() - 86400).day
    today = Periods.now().day
    client = redis_server.client()
    try:
        client.set(KeySpace(daily, team).spent(f"d{yesterday}"), 1_500_000)
        client.set(KeySpace(total, team).spent("total"), 1_000_000)
        client.set(KeySpace(total, team).spent(f"d{today}"), 3_000_000)  # not the period it reads
    finally:
        client.close()

    async def read() -> dict[tuple[str, str], Any]:
        import redis.asyncio

        aio = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            return await used_ratios(aio, 100_000)
        finally:
            await aio.aclose()

    ratios = asyncio.run(read())
    assert (ratios[(team, "daily")].ratio, ratios[(team, "total")].ratio) == (0.0, 0.25)
