"""Finance's numbers: spend reports and usage exports agree with the money the ledger holds.

A gateway of its own (own Redis, so "the whole ledger" is what these tests put in it) is driven
with random traffic; the report, the export, the keys' spent counters, what callers were told they
paid, the CSV, the JSON and the CLI must all say the same, to the micro-dollar.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.ledger.reports import GROUP_FIELDS
from gateway.money.micros import usd_to_micros
from gateway.money.pricing import DEFAULT_PRICES_USD
from gateway.store.keyspace import KeySpace, TeamSpace, directory_entry
from tests.support import (
    ADMIN_TOKEN,
    TLS,
    Gateway,
    RedisServer,
    Simulator,
    agenerate,
    gateway_env,
    generate,
    key_space,
    run_clis,
)

PRICES = {model: usd_to_micros(usd) for model, usd in DEFAULT_PRICES_USD.items()}
FAULTS = ["", "", "", "", "images=K", "images=K", "status=500", "drop=1", "garbage=1"]
GROUPINGS = ["", "team", "key", "model", "day", "team,model", "key,model,day", "day,team,key,model"]
# End users named by calls: team fin-a's keys name one on some calls, fin-b's on every call, fin-c's
# never (a team and a day where no call named a user must still be in a report by user).
USERS = ["alice@example.com", "bob", "用户 42"]


def every_grouping() -> list[str]:
    """Every non-empty combination of the group fields, in their order and reversed."""
    names = list(GROUP_FIELDS)
    combos = [
        [name for bit, name in enumerate(names) if mask >> bit & 1] for mask in range(1, 2 ** len(names))
    ]
    return [",".join(c) for c in combos] + [",".join(reversed(c)) for c in combos if len(c) > 1]


def today() -> date:
    return datetime.now(UTC).date()


def around_today() -> tuple[str, str]:
    """Yesterday to tomorrow: a test run across midnight UTC still sees all its calls."""
    return (today() - timedelta(days=1)).isoformat(), (today() + timedelta(days=1)).isoformat()


@dataclass
class Sent:
    """What the callers saw."""

    request_ids: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    told_cost_micros: int = 0
    images_received: int = 0


@dataclass
class World:
    gateway: Gateway
    redis: RedisServer
    key_ids: list[str]
    sent: Sent
    seed: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[World]:
    """A gateway with its own Redis, after random traffic on random keys, teams, models and faults."""
    base = tmp_path_factory.mktemp("ledger")
    redis = RedisServer(base / "redis").start()
    gw = Gateway(gateway_env(redis.url, simulator.url, base / "state"), base / "gateway.log").start()
    seed = int(os.environ.get("LEDGER_TEST_SEED", secrets.randbits(32)))
    rng = random.Random(seed)
    keys = []
    for i in range(6):
        team = f"fin-{'abc'[i % 3]}"
        keys.append((team, *gw.create_key(team=team, name=f'key {i}, "quoted"')))
    sent = asyncio.run(_random_traffic(gw, [(team, k) for team, k, _ in keys], rng, 90))
    yield World(gw, redis, [kid for _, _, kid in keys], sent, seed)
    gw.stop()
    redis.stop()


async def _random_traffic(gw: Gateway, keys: list[tuple[str, str]], rng: random.Random, count: int) -> Sent:
    bodies = []
    for _ in range(count):
        n = rng.randint(1, 4)
        fault = rng.choice(FAULTS).replace("K", str(rng.randint(0, n + 1)))
        team, key = rng.choice(keys)
        body: dict[str, Any] = {"model": rng.choice(sorted(PRICES)), "prompt": "ledger", "n": n}
        if fault:
            body["simulator_fault"] = fault
        if team == "fin-b" or (team == "fin-a" and rng.random() < 0.5):
            body["user"] = rng.choice(USERS)
        bodies.append((key, body))
    sent = Sent()
    limit = asyncio.Semaphore(12)
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, verify=TLS) as client:

        async def one(key: str, body: dict[str, Any]) -> None:
            async with limit:
                response = await agenerate(client, key, **body)
            sent.request_ids.add(response.headers["x-request-id"])
            sent.statuses[response.status_code] += 1
            if response.status_code == 200:
                sent.told_cost_micros += usd_to_micros(response.headers["x-gateway-cost-usd"])
                sent.images_received += len(response.json()["data"])

        await asyncio.gather(*(one(key, body) for key, body in bodies))
    return sent


def admin_get(gw: Gateway, path: str, **params: str) -> httpx.Response:
    with gw.admin() as admin:
        return admin.get(path, params=params)


def report(gw: Gateway, group_by: str, start: str | None = None, end: str | None = None) -> dict[str, Any]:
    first, last = around_today()
    response = admin_get(
        gw, "/admin/v1/reports/spend", start=start or first, end=end or last, group_by=group_by
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def export(
    gw: Gateway, fmt: str = "jsonl", start: str | None = None, end: str | None = None
) -> httpx.Response:
    first, last = around_today()
    response = admin_get(gw, "/admin/v1/usage", start=start or first, end=end or last, format=fmt)
    assert response.status_code == 200, response.text
    return response


def jsonl(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines()]


def micros(usd: str) -> int:
    return usd_to_micros(usd)


# -- the money adds up -------------------------------------------------------------------------------


def test_report_export_counters_and_callers_agree_to_the_micro_dollar(world: World) -> None:
    why = f"(seed {world.seed}; rerun with LEDGER_TEST_SEED={world.seed})"
    totals = report(world.gateway, "")["totals"]
    records = jsonl(export(world.gateway))
    with world.redis.client() as r:
        counters = sum(int(r.get(key_space(r, kid).spent("total")) or 0) for kid in world.key_ids)

    assert micros(totals["spend_usd"]) == totals["spend_micros"]
    assert totals["spend_micros"] == sum(rec["charge_micros"] for rec in records) == counters, why
    assert totals["spend_micros"] == world.sent.told_cost_micros, why
    assert totals["images"] == sum(rec["images"] for rec in records), why
    # What callers received: the images charged, and those delivered beyond a call's reservation
    # (images=K with K > n), recorded and not charged.
    received = sum(rec["images"] + rec["over_delivered"] for rec in records)
    assert received == world.sent.images_received, why
    assert totals["calls"] == len(records) == len(world.sent.request_ids), why
    assert {rec["request_id"] for rec in records} == world.sent.request_ids, why
    assert world.sent.statuses[200] and len(world.sent.statuses) > 1, f"traffic had no faults {why}"
    assert totals["spend_micros"] > 0, why


def test_every_grouping_adds_up_to_the_totals_and_to_the_raw_records(world: World) -> None:
    records = jsonl(export(world.gateway))
    for group_by in GROUPINGS:
        body = report(world.gateway, group_by)
        assert body["group_by"] == [g for g in group_by.split(",") if g]
        columns = [c for g in filter(None, group_by.split(",")) for c in _columns(g)]
        expected = records_by(records, columns)
        rows = {
            tuple(row[c] for c in columns): [row["calls"], row["images"], micros(row["spend_usd"])]
            for row in body["data"]
        }
        if not columns:
            assert body["data"] == [], "grouped by nothing: the totals alone"
            continue
        assert rows == expected, group_by
        for i, name in enumerate(("calls", "images", "spend_micros")):
            assert sum(v[i] for v in rows.values()) == body["totals"][name], (group_by, name)


def test_every_combination_of_groupings_adds_up_to_the_ledgers_total(world: World) -> None:
    """Team, key, model, day and user, alone and in every combination: each report of the range
    has the ledger's calls, images and spend, row by row and in total (calls naming no user
    are user "")."""
    why = f"(seed {world.seed}; rerun with LEDGER_TEST_SEED={world.seed})"
    records = jsonl(export(world.gateway))
    ledger = [len(records), sum(r["images"] for r in records), sum(r["charge_micros"] for r in records)]
    assert {r["team"] for r in records if r["user"]} and {r["team"] for r in records if not r["user"]}
    wrong = {}
    for group_by in every_grouping():
        body = report(world.gateway, group_by)
        columns = [c for g in group_by.split(",") for c in _columns(g)]
        expected = records_by(records, columns)
        rows = {
            tuple(row[c] for c in columns): [row["calls"], row["images"], row["spend_micros"]]
            for row in body["data"]
        }
        summed = [sum(v[i] for v in rows.values()) for i in range(3)]
        totals = [body["totals"][n] for n in ("calls", "images", "spend_micros")]
        if summed != ledger or totals != ledger or rows != expected:
            wrong[group_by] = f"rows add up to {summed}, totals {totals}"
    assert not wrong, f"the ledger has {ledger} (calls, images, micro-USD); {wrong} {why}"


def records_by(records: list[dict[str, Any]], columns: list[str]) -> dict[tuple[str, ...], list[int]]:
    """Calls, images and micro-USD of the ledger's records, summed per value of ``columns``."""
    sums: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for rec in records:
        row = sums[tuple(str(rec[c]) for c in columns)]
        row[0] += 1
        row[1] += rec["images"]
        row[2] += rec["charge_micros"]
    return dict(sums)


def _columns(group: str) -> list[str]:
    return ["key_id", "key_name"] if group == "key" else [group]


def test_csv_and_json_reports_say_the_same(world: World) -> None:
    first, last = around_today()
    for group_by in GROUPINGS:
        body = report(world.gateway, group_by)
        response = admin_get(
            world.gateway, "/admin/v1/reports/spend", start=first, end=last, group_by=group_by, format="csv"
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        table = list(csv.reader(io.StringIO(response.text)))
        columns = [c for g in filter(None, group_by.split(",")) for c in _columns(g)]
        amounts = ["calls", "images", "spend_usd", "succeeded", "failed", "cost_usd", "margin_usd"]
        assert table[0] == [*columns, *amounts]
        as_json = [[*(row[c] for c in columns), *(str(row[a]) for a in amounts)] for row in body["data"]]
        assert table[1:-1] == as_json, group_by
        totals = body["totals"]
        label = ["TOTAL", *[""] * (len(columns) - 1)] if columns else []
        assert table[-1] == [*label, *(str(totals[a]) for a in amounts)]


def test_cli_report_agrees_with_the_admin_api(world: World) -> None:
    first, last = around_today()
    dates = ["report", "spend", "--start", first, "--end", last]
    groupings = ("team,key,model,day", "")
    *as_json, csv_out, table = run_clis(
        world.redis.url,
        *([*dates, "--group-by", group_by, "--format", "json"] for group_by in groupings),
        [*dates, "--format", "csv"],
        [*dates, "--group-by", "team"],
    )
    for group_by, done in zip(groupings, as_json, strict=True):
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == report(world.gateway, group_by)
    api_csv = admin_get(world.gateway, "/admin/v1/reports/spend", start=first, end=last, format="csv")
    assert csv_out.stdout.replace("\r\n", "\n") == api_csv.text.replace("\r\n", "\n")
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "team", "calls", "images", "spend_usd", "succeeded", "failed", "cost_usd", "margin_usd"
    ]  # fmt: skip
    assert lines[-1].split()[0] == "TOTAL"
    assert lines[-1].split()[3] == report(world.gateway, "team")["totals"]["spend_usd"]


def test_exports_in_csv_and_jsonl_hold_the_same_records_with_every_field(world: World) -> None:
    records = jsonl(export(world.gateway))
    response = export(world.gateway, "csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["request_id"] for row in rows] == [rec["request_id"] for rec in records]
    for row, rec in zip(rows, records, strict=True):
        assert row == {name: "" if rec.get(name) is None else str(rec[name]) for name in row}
    fields = {
        "request_id", "ts_ms", "day", "team", "key_id", "key_name", "model", "n", "images",
        "upstream_status", "upstream_latency_ms", "outcome", "client_left", "reconcile",
        "unit_price_micros", "charge_micros", "reserved", "ledger_id", "charge_usd", "time",
        "stream", "upstream_images", "over_budget", "user", "over_delivered", "channel", "cost_micros",
        "cost_usd", "margin_usd", "attempt", "failed_over",
    }  # fmt: skip
    assert set(rows[0]) == fields
    assert all(set(rec) == fields for rec in records)
    assert [r["ledger_id"] for r in records] == sorted(
        (r["ledger_id"] for r in records), key=lambda i: tuple(map(int, i.split("-")))
    ), "records come in time order"
    for rec in records:
        assert rec["charge_micros"] == rec["images"] * rec["unit_price_micros"] == micros(rec["charge_usd"])
        assert rec["unit_price_micros"] == PRICES[rec["model"]]
        assert rec["images"] <= rec["n"] and (rec["over_delivered"] == 0 or rec["reconcile"] == 1)
        # One channel, with no cost of its own: each call costs what it is charged.
        assert (rec["channel"], rec["cost_micros"], rec["margin_usd"]) == (
            "default",
            rec["charge_micros"],
            "0.000000",
        )
    outcomes = {rec["outcome"] for rec in records}
    assert "ok" in outcomes and outcomes & {"5xx", "connect", "bad_response"}, outcomes


def test_cli_export_streams_the_same_records_as_the_admin_api(world: World) -> None:
    first, last = around_today()
    formats = ("jsonl", "csv")
    exports = run_clis(
        world.redis.url,
        *(["usage", "export", "--start", first, "--end", last, "--format", fmt] for fmt in formats),
    )
    for fmt, done in zip(formats, exports, strict=True):
        assert done.returncode == 0, done.stderr
        assert done.stdout.replace("\r\n", "\n") == export(world.gateway, fmt).text.replace("\r\n", "\n")


def test_a_day_without_calls_is_an_empty_report_and_export(world: World) -> None:
    body = report(world.gateway, "team", "2020-02-29", "2020-02-29")
    assert body["data"] == []
    assert body["totals"] == {
        "calls": 0, "images": 0, "spend_usd": "0.000000", "spend_micros": 0, "succeeded": 0, "failed": 0,
        "cost_usd": "0.000000", "cost_micros": 0, "margin_usd": "0.000000", "margin_micros": 0,
    }  # fmt: skip
    assert export(world.gateway, "jsonl", "2020-02-29", "2020-02-29").text == ""
    assert export(world.gateway, "csv", "2020-02-29", "2020-02-29").text.startswith("ledger_id,request_id,")


# -- reports read rollups, exports read streams ---------------------------------------------------


def _seed_key(r: Any, team: str, name: str) -> str:
    key_id = secrets.token_hex(6)
    r.hset(KeySpace(key_id, team).record, mapping={"key_id": key_id, "team": team, "name": name})
    r.hset(directory_entry(key_id), "team", team)
    r.sadd("gw:keys", key_id)
    r.sadd("gw:teams", team)
    return key_id


def test_report_sums_rollups_without_reading_a_single_record(world: World) -> None:
    """Thirty days of a key's rollups, seeded directly, no usage records at all: summed exactly."""
    model = "doubao-seedream-4-0-250828"
    with world.redis.client() as r:
        key_id = _seed_key(r, "seeded", "thirty days")
        team = TeamSpace("seeded")
        for day in range(1, 31):
            amounts = {"calls": day, "images": 2 * day, "spend": 2 * day * 162_000}
            r.hset(team.rollup(f"2025-04-{day:02d}"), mapping={f"{model}|{w}": n for w, n in amounts.items()})
            r.hset(
                team.key_rollup(f"2025-04-{day:02d}"),
                mapping={f"{key_id}|{w}|{model}": n for w, n in amounts.items()},
            )
        r.config_resetstat()
        body = report(world.gateway, "key,day", "2025-04-01", "2025-04-30")
        stats = r.info("commandstats")
        teams = r.scard("gw:teams")
    assert [row["day"] for row in body["data"]] == [f"2025-04-{d:02d}" for d in range(1, 31)]
    assert {row["key_id"] for row in body["data"]} == {key_id}
    assert body["totals"]["calls"] == sum(range(1, 31)) == 465
    assert body["totals"]["images"] == 930
    assert body["totals"]["spend_usd"] == "150.660000"  # 930 x $0.162
    assert not {"cmdstat_xrange", "cmdstat_xrevrange", "cmdstat_xread", "cmdstat_scan"} & set(stats)
    assert stats["cmdstat_hgetall"]["calls"] >= teams * 30
    # Rollups written with no per-user hash at all (no call named a user): by user, one row "".
    by_user = report(world.gateway, "team,user", "2025-04-01", "2025-04-30")
    assert [(r["team"], r["user"], r["calls"]) for r in by_user["data"]] == [("seeded", "", 465)]
    assert by_user["totals"] == body["totals"]


def test_export_merges_streams_across_pages_by_time_and_selects_by_call_day(world: World) -> None:
    """2,500 records on each of two keys, interleaved in time: every one, once, in order.

    A call reserved just before midnight and recorded just after belongs to the first day (its
    ``day`` field, which its rollup and spend counters use), in the export as in the report.
    """
    day = date(2025, 6, 10)
    midnight = int(datetime(2025, 6, 11, tzinfo=UTC).timestamp() * 1000)
    start = midnight - 86_400_000
    with world.redis.client() as r:
        keys = [_seed_key(r, "paged", f"paged {i}") for i in range(2)]
        pipe = r.pipeline(transaction=False)
        for i in range(5000):
            key_id = keys[i % 2]
            ms = start + 1 + i * 17
            pipe.xadd(KeySpace(key_id, "paged").ledger, _record(f"req-{i}", key_id, day, 1), id=f"{ms}-0")
        late = midnight + 30_000  # recorded after midnight, reserved before it
        first, second = (KeySpace(k, "paged").ledger for k in keys)
        pipe.xadd(first, _record("req-late", keys[0], day, 1), id=f"{late}-0")
        next_day = _record("req-next-day", keys[1], day + timedelta(days=1), 1)
        pipe.xadd(second, next_day, id=f"{late + 1}-0")
        pipe.execute()
    records = jsonl(export(world.gateway, "jsonl", day.isoformat(), day.isoformat()))
    assert [rec["request_id"] for rec in records] == [f"req-{i}" for i in range(5000)] + ["req-late"]
    following = jsonl(export(world.gateway, "jsonl", (day + timedelta(days=1)).isoformat(), "2025-06-11"))
    assert [rec["request_id"] for rec in following] == ["req-next-day"]


def _record(request_id: str, key_id: str, day: date, images: int) -> dict[str, Any]:
    return {
        "request_id": request_id, "ts_ms": 0, "day": day.isoformat(), "team": "paged", "key_id": key_id,
        "key_name": "paged", "model": "m", "n": 1, "images": images, "upstream_status": 200,
        "upstream_latency_ms": 1, "outcome": "ok", "client_left": 0, "reconcile": 0,
        "unit_price_micros": 1, "charge_micros": images, "reserved": 1,
    }  # fmt: skip


def test_export_is_streamed_in_chunks(world: World) -> None:
    with world.gateway.admin() as admin:
        with admin.stream("GET", "/admin/v1/usage", params={"start": "2025-06-10", "end": "2025-06-10"}) as r:
            assert r.status_code == 200
            assert r.headers.get("transfer-encoding") == "chunked"
            assert "content-length" not in r.headers
            chunks = [chunk for chunk in r.iter_raw() if chunk]
    assert len(chunks) > 1
    assert b"".join(chunks).count(b"\n") == 5001


# -- asking wrongly ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start": "2026-13-01", "end": "2026-12-31"}, "start"),
        ({"start": "2026-11-01", "end": "30.11.2026"}, "end"),
        ({"start": "2026-11-1", "end": "2026-11-30"}, "start"),
        ({"start": "2026-11-30", "end": "2026-11-01"}, "start"),
        ({"start": "2020-01-01", "end": "2026-11-30"}, "end"),
        ({"start": "2026-11-01", "end": "2026-11-30", "group_by": "team,project"}, "group_by"),
        ({"start": "2026-11-01", "end": "2026-11-30", "format": "xml"}, "format"),
        ({"end": "2026-11-30"}, "start"),
    ],
)
def test_malformed_report_queries_are_400_envelopes(world: World, params: dict[str, str], param: str) -> None:
    response = admin_get(world.gateway, "/admin/v1/reports/spend", **params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param in ("start", "end") and "start" in params:
        usage = admin_get(world.gateway, "/admin/v1/usage", **params)
        assert usage.status_code == 400 and usage.json()["error"]["param"] == param


def test_a_year_is_one_report_and_more_than_400_days_is_refused(world: World) -> None:
    assert (
        admin_get(world.gateway, "/admin/v1/reports/spend", start="2025-01-01", end="2026-02-04").status_code
        == 200
    )
    too_long = admin_get(world.gateway, "/admin/v1/reports/spend", start="2025-01-01", end="2026-02-05")
    assert too_long.status_code == 400
    assert "400 days" in too_long.json()["error"]["message"]


def test_reports_need_the_admin_token(world: World) -> None:
    for path in ("/admin/v1/reports/spend", "/admin/v1/usage"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = httpx.get(
                world.gateway.url + path,
                params={"start": "2026-01-01", "end": "2026-01-01"},
                headers=headers,
                verify=TLS,
            )
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_admin_token"
            assert ADMIN_TOKEN not in response.text


def test_cli_says_what_is_wrong_with_the_dates(world: World) -> None:
    reversed_dates, not_a_date = run_clis(
        world.redis.url,
        ["report", "spend", "--start", "2026-11-30", "--end", "2026-11-01"],
        ["usage", "export", "--start", "yesterday", "--end", "2026-11-01"],
    )
    assert reversed_dates.returncode == 1
    assert reversed_dates.stderr.strip() == "gateway: 'start' (2026-11-30) is after 'end' (2026-11-01)."
    assert not_a_date.returncode == 1
    assert "'start' must be a date like 2026-11-01" in not_a_date.stderr


def test_report_and_export_asked_while_redis_is_down_are_503_envelopes(
    redis_factory: Any, simulator: Simulator, gateway_factory: Any
) -> None:
    redis = redis_factory()
    gw = gateway_factory(redis.url, simulator.url)
    redis.kill()
    for path in ("/admin/v1/reports/spend", "/admin/v1/usage"):
        response = admin_get(gw, path, start="2026-01-01", end="2026-01-31")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"


# -- a busy month --------------------------------------------------------------------------------------


def test_a_month_of_rollups_standing_for_a_million_calls_reports_in_seconds(
    redis_factory: Any, simulator: Simulator, gateway_factory: Any
) -> None:
    """500 keys x 31 days x 3 models of rollups standing for 1,023,000 calls: a few seconds at most."""
    redis = redis_factory()
    models = sorted(PRICES)
    # What settle.lua would have left after those calls, written a team-day hash at a time.
    team_rollups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # name -> field -> n
    key_rollups: dict[str, dict[str, int]] = defaultdict(dict)
    with redis.client() as r:
        pipe = r.pipeline(transaction=False)
        for k in range(500):
            key_id, team = f"busy{k:08d}", f"team-{k % 20}"
            record = {"key_id": key_id, "team": team, "name": f"k{k}"}
            pipe.hset(KeySpace(key_id, team).record, mapping=record)
            pipe.hset(directory_entry(key_id), "team", team)
            pipe.sadd("gw:keys", key_id)
            pipe.sadd("gw:teams", team)
            for d in range(1, 32):
                day = f"2026-01-{d:02d}"
                for m, model in enumerate(models):
                    calls = 21 + m  # 66 calls a key a day
                    amounts = {"calls": calls, "images": calls, "spend": calls * PRICES[model]}
                    for what, n in amounts.items():
                        team_rollups[TeamSpace(team).rollup(day)][f"{model}|{what}"] += n
                        key_rollups[TeamSpace(team).key_rollup(day)][f"{key_id}|{what}|{model}"] = n
        for rollups in (team_rollups, key_rollups):
            for name, fields in rollups.items():
                pipe.hset(name, mapping=fields)
        pipe.execute()
    gw = gateway_factory(redis.url, simulator.url)
    started = time.perf_counter()
    body = report(gw, "team,key,model,day", "2026-01-01", "2026-01-31")
    elapsed = time.perf_counter() - started
    per_key_day = sum((21 + m) * PRICES[model] for m, model in enumerate(models))
    assert body["totals"]["calls"] == 500 * 31 * 66 == 1_023_000
    assert body["totals"]["spend_micros"] == 500 * 31 * per_key_day
    assert len(body["data"]) == 500 * 31 * 3
    assert elapsed < 10, f"a month's report took {elapsed:.1f} s"
    print(f"month report, 500 keys, 46,500 rows: {elapsed:.2f} s")


def test_reports_split_calls_into_succeeded_and_failed_and_exports_say_when_in_utc(world: World) -> None:
    """Failed: a settled call that delivered no image (so charged nothing)."""
    records = jsonl(export(world.gateway))
    failed = sum(1 for rec in records if rec["images"] == 0)
    assert 0 < failed < len(records)
    for group_by in ("", "team,model"):
        body = report(world.gateway, group_by)
        totals = body["totals"]
        assert (totals["calls"], totals["failed"], totals["succeeded"]) == (
            len(records),
            failed,
            len(records) - failed,
        )
        assert all(row["succeeded"] + row["failed"] == row["calls"] for row in body["data"])
    for rec in records:
        when = datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
        assert rec["time"].endswith("Z") and when.utcoffset() == timedelta(0)
        assert int(when.timestamp() * 1000) == rec["ts_ms"]


def test_a_name_that_looks_like_a_formula_reaches_the_spreadsheet_as_text(gateway: Gateway) -> None:
    """OWASP CSV injection: a cell starting with = + - @ is prefixed with a single quote."""
    suffix = secrets.token_hex(3)
    team = f"csv-{suffix}"  # a team name must start with a letter or digit; a key name may not
    names = ['=HYPERLINK("http://evil/")', "+1+cmd", "-2+3", "@SUM(A1)"]
    key_ids = []
    for name in names:
        key, key_id = gateway.create_key(team=team, name=name)
        key_ids.append(key_id)
        response = generate(gateway, key, model=sorted(PRICES)[0])
        assert response.status_code == 200
    first, last = around_today()
    spend = admin_get(
        gateway, "/admin/v1/reports/spend", start=first, end=last, group_by="team,key", format="csv"
    )
    rows = [r for r in csv.DictReader(io.StringIO(spend.text)) if r["key_id"] in key_ids]
    assert {(r["team"], r["key_name"]) for r in rows} == {(team, "'" + name) for name in names}
    usage = export(gateway, "csv")
    rows = [r for r in csv.DictReader(io.StringIO(usage.text)) if r["key_id"] in key_ids]
    assert {(r["team"], r["key_name"]) for r in rows} == {(team, "'" + name) for name in names}
    as_json = [r for r in jsonl(export(gateway)) if r["key_id"] in key_ids]
    assert {r["key_name"] for r in as_json} == set(names), "JSON lines carry the names unchanged"
