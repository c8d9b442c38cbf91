"""A process killed mid-call leaves no upstream call without a ledger record.

The sweeper that releases a dead holder's reservation writes the call's ledger record (outcome
``orphaned``, no charge, reconcile 1), so finance sees every call the upstream may bill.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from redis.asyncio import Redis

from gateway.admin.keys import KeyCreate, KeyStore, parse_token
from gateway.money import budget
from gateway.money.periods import Periods
from gateway.money.usage_record import DERIVED_FIELDS, EXPORT_FIELDS
from gateway.store.keyspace import KeySpace, TeamSpace
from tests.fault_tools import doomed_gateway, ledger
from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    TLS,
    Gateway,
    RedisServer,
    Simulator,
    UtcSpan,
    ready_together,
    reserve_one,
    wait_until,
)

IN_FLIGHT = 6


def _export(gw, key_id: str) -> list[dict]:
    today = datetime.now(UTC).date()
    days = {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}  # across midnight too
    with gw.admin() as admin:
        response = admin.get("/admin/v1/usage", params={**days, "format": "jsonl"})
    assert response.status_code == 200, response.text
    return [r for r in map(orjson.loads, response.text.splitlines()) if r.get("key_id") == key_id]


def test_every_upstream_call_of_a_killed_process_has_a_ledger_record(
    gateway: Gateway, redis_server: RedisServer, simulator_factory, gateway_factory
) -> None:
    simulator: Simulator = simulator_factory()
    victim, survivor = doomed_gateway(gateway_factory, redis_server.url, simulator.url), gateway
    key, key_id = victim.create_key(team="orphans", name="killed")
    span = UtcSpan()
    finished = victim  # calls that finish before the kill settle as usual

    async def call(fault: str | None) -> None:
        body = {"model": MODEL, "prompt": "x"}
        if fault:
            body["simulator_fault"] = fault
        async with httpx.AsyncClient(timeout=30, verify=TLS) as client:
            try:
                await client.post(
                    f"{finished.url}/v1/images/generations",
                    headers={"Authorization": f"Bearer {key}"},
                    json=body,
                )
            except httpx.HTTPError:
                pass

    async def kill_with_calls_in_flight() -> None:
        await asyncio.gather(*(call(None) for _ in range(3)))  # settled normally
        tasks = [asyncio.create_task(call("delay=30")) for _ in range(IN_FLIGHT)]
        await asyncio.to_thread(
            wait_until, lambda: simulator.count() == 3 + IN_FLIGHT, 15, what="every call reached the upstream"
        )
        victim.stop(signal.SIGKILL)
        await asyncio.gather(*tasks)

    asyncio.run(kill_with_calls_in_flight())
    wait_until(lambda: survivor.usage(key_id)["inflight"] == 0, timeout_s=20, what="reservations swept")

    records = ledger(redis_server.url, key_id)
    assert len(records) == simulator.count() == 3 + IN_FLIGHT, records
    orphans = [r for r in records if r["outcome"] == "orphaned"]
    assert len(orphans) == IN_FLIGHT
    assert len({r["request_id"] for r in records}) == len(records)
    for record in orphans:
        assert (record["team"], record["key_id"], record["key_name"], record["model"]) == (
            "orphans",
            key_id,
            "killed",
            MODEL,
        )
        assert (record["n"], record["images"], record["charge_micros"], record["reconcile"]) == (
            "1",
            "0",
            "0",
            "1",
        )
        assert record["unit_price_micros"] == str(MODEL_PRICE_MICROS)
        assert record["day"] in span.days()
    # Exactly the usage record's fields and the script's, so the export reads them as any other.
    stored = set(EXPORT_FIELDS) - set(DERIVED_FIELDS)
    assert all(set(r) == stored for r in orphans)
    exported = [r for r in _export(survivor, key_id) if r["outcome"] == "orphaned"]
    assert len(exported) == IN_FLIGHT and all(
        r["charge_usd"] == "0" or float(r["charge_usd"]) == 0 for r in exported
    )
    assert float(survivor.usage(key_id)["spent_usd"]) * 1_000_000 == 3 * MODEL_PRICE_MICROS


def test_an_orphan_of_the_previous_release_and_a_late_settlement_both_reach_the_ledger(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A reservation written before the model was kept ("amount:images:price") is still swept with
    a record; a late settlement of an orphaned request id still charges (the later record wins)."""
    from gateway.call.log import CallLog
    from gateway.call.settle import Settler, order_for
    from gateway.money.spool import Spool

    async def run() -> list[dict[bytes, bytes]]:
        client = Redis.from_url(redis_server.url)
        try:
            secret, record = await KeyStore(client).create(KeyCreate(team="old", name="upgrade"))
            token = parse_token(secret)
            assert token is not None
            key_id, periods = record["key_id"], Periods.now()
            space = KeySpace(key_id, "old")
            await client.hset(space.reservations, "req_old", "2000:2:1000")
            await client.zadd(space.team_space.reservation_deadlines, {f"{key_id}/req_old": 1})
            await client.hset(
                space.state, mapping={"reserved_micros": 2000, "reserved_images": 2, "inflight": 1}
            )
            held = await reserve_one(
                client, space, token[1], "req_late", lifetime_ms=1, unit_price_micros=1000
            )
            assert isinstance(held, budget.Reservation)
            await asyncio.sleep(0.01)
            used = await budget.usage(client, space, periods)  # sweeps req_late
            assert (used.reserved_micros, used.inflight) == (0, 0)
            call = CallLog(request_id="req_late", started=0.0, model="m", n=1, images=1)
            order = order_for(
                call, key_id=key_id, held=held, unit_price_micros=1000, periods=periods, reconcile=False
            )
            settled = await Settler(client, Spool(tmp_path / "spool", "t"), 400).settle(order)
            assert settled is not None and settled.spent_micros == 1000
            return [fields for _, fields in await client.xrange(space.ledger)]
        finally:
            await client.aclose()

    entries = asyncio.run(run())
    summary = [(e[b"request_id"], e[b"outcome"], e[b"model"], e[b"n"], e[b"charge_micros"]) for e in entries]
    assert summary == [
        (b"req_old", b"orphaned", b"unknown", b"2", b"0"),
        (b"req_late", b"orphaned", b"m", b"1", b"0"),
        (b"req_late", b"unknown", b"m", b"1", b"1000"),
    ]


def test_a_team_nobody_calls_again_gets_its_orphans_released_by_the_periodic_sweep(
    redis_server: RedisServer, simulator_factory, gateway_factory
) -> None:
    """No call and no usage read touches the team after the kill: the sweep alone releases it."""
    simulator: Simulator = simulator_factory()
    victim = doomed_gateway(gateway_factory, redis_server.url, simulator.url, wait_ready=False)
    sweeper = gateway_factory(redis_server.url, simulator.url, wait_ready=False, GATEWAY_ORPHAN_SWEEP_S="1")
    ready_together(victim, sweeper)
    team = f"forgotten-{datetime.now(UTC).strftime('%H%M%S%f')}"
    key, key_id = victim.create_key(team=team, name="killed")

    async def kill_with_calls_in_flight() -> None:
        async def call() -> None:
            async with httpx.AsyncClient(timeout=30, verify=TLS) as client:
                try:
                    await client.post(
                        f"{victim.url}/v1/images/generations",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": MODEL, "prompt": "x", "simulator_fault": "delay=30"},
                    )
                except httpx.HTTPError:
                    pass

        tasks = [asyncio.create_task(call()) for _ in range(2)]
        await asyncio.to_thread(wait_until, lambda: simulator.count() == 2, 15, what="calls at the upstream")
        victim.stop(signal.SIGKILL)
        await asyncio.gather(*tasks)

    asyncio.run(kill_with_calls_in_flight())
    orphaned = wait_until(
        lambda: [r for r in ledger(redis_server.url, key_id) if r["outcome"] == "orphaned"] or None,
        timeout_s=30,
        what="the sweep's orphan records",
    )
    assert len(orphaned) == 2
    with redis_server.client() as client:
        held = client.hget(TeamSpace(team).state, "reserved_micros")
        assert int(held or 0) == 0
        assert client.zcard(TeamSpace(team).reservation_deadlines) == 0
