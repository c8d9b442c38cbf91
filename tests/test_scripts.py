"""The Lua scripts as Redis runs them: loaded by gateway/store/scripts.py, errors pointing at their files."""

from __future__ import annotations

import asyncio
import re
from importlib import resources

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.store import scripts
from gateway.store.keyspace import KeySpace
from tests.support import RedisServer, reserve_one


def line_of(script: str, text: str) -> int:
    source = resources.files("gateway.store").joinpath("lua", script).read_text()
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def test_a_script_error_names_the_line_of_the_script_file(redis_server: RedisServer) -> None:
    space = KeySpace("linenumbers1", "t")
    team = space.team_space

    async def run() -> str:
        client = Redis.from_url(redis_server.url)
        try:
            await client.hset(space.record, mapping={"secret_hash": "h", "team": "t", "name": "n"})
            keys = [space.record, space.state, space.reservations, space.ledger, space.cancelled]
            keys += [space.spent("d"), space.spent("m"), space.spent("total"), space.images("d")]
            keys += [team.settings, team.state, team.reservation_deadlines]
            keys += [team.spent("d"), team.spent("m"), team.spent("total"), team.images("d")]
            args = ["h", "m", "req", "not-a-number", 1, 1000, 2**50, "d", "[]", space.key_id, team.tag]
            with pytest.raises(ResponseError) as failure:
                # max_images is not a number: the script fails where it first does arithmetic on it
                await scripts.RESERVE(client, keys, args)
            return str(failure.value)
        finally:
            await client.aclose()

    message = asyncio.run(run())
    found = re.search(r"user_script:(\d+):", message)
    assert found is not None, message
    assert int(found.group(1)) == line_of("reserve.lua", "local amount = max_images * unit_price")


def test_the_shared_functions_are_one_line_without_comments() -> None:
    prelude = scripts.one_line(resources.files("gateway.store").joinpath("lua", "common.lua").read_text())
    assert "\n" not in prelude and "--" not in prelude
    assert "local function release_orphans(" in prelude
    assert scripts.RESERVE.source.count("\n") == scripts.load("reserve.lua").count("\n")


def test_a_late_settlement_past_the_budget_is_flagged_not_hidden(redis_server: RedisServer, tmp_path) -> None:
    """A process cut off from Redis longer than its reservation lives: the reservation lapses,
    another call spends the budget, then the late settlement lands. It is charged (the upstream
    billed it) and flagged: in the ledger record, the settle answer and a metric."""
    from gateway.admin.keys import KeyCreate, KeyStore, parse_token
    from gateway.call.log import CallLog
    from gateway.call.settle import Settler, order_for
    from gateway.core import metrics
    from gateway.money import budget
    from gateway.money.periods import Periods
    from gateway.money.spool import Spool

    async def run() -> tuple[list[bool], dict[bytes, bytes]]:
        client = Redis.from_url(redis_server.url)
        try:
            secret, record = await KeyStore(client).create(
                KeyCreate(team="late", name="partitioned", budget_usd="1", budget_period="total")
            )
            token = parse_token(secret)
            assert token is not None
            key_id, periods = record["key_id"], Periods.now()
            space = KeySpace(key_id, "late")
            settler = Settler(client, Spool(tmp_path / "spool", "test"), 400)
            flags = []
            for request_id, lifetime_ms in (("req_cut_off", 1), ("req_meanwhile", 60_000)):
                held = await reserve_one(client, space, token[1], request_id, lifetime_ms=lifetime_ms)
                assert isinstance(held, budget.Reservation), held  # the first lapsed: room again
                await asyncio.sleep(0.01)
            for request_id in ("req_meanwhile", "req_cut_off"):
                call = CallLog(request_id=request_id, started=0.0, model="m", images=1)
                order = order_for(
                    call,
                    key_id=key_id,
                    held=held,
                    unit_price_micros=1_000_000,
                    periods=periods,
                    reconcile=False,
                )
                settled = await settler.settle(order)
                assert settled is not None
                flags.append(settled.over_budget)
            entries = await client.xrange(space.ledger)
            return flags, entries[-1][1]
        finally:
            await client.aclose()

    before = metrics.LATE_OVERSPENDS.labels("late", "partitioned")._value.get()
    flags, last = asyncio.run(run())
    assert flags == [False, True]
    assert (last[b"request_id"], last[b"reserved"], last[b"over_budget"]) == (b"req_cut_off", b"0", b"1")
    assert metrics.LATE_OVERSPENDS.labels("late", "partitioned")._value.get() == before + 1


def test_a_cancelled_reserve_holds_nothing_whichever_runs_first(redis_server: RedisServer) -> None:
    """A reserve whose caller was told 503 is cancelled: released if it ran, refused if it runs after."""
    from gateway.admin.keys import KeyCreate, KeyStore, parse_token
    from gateway.money import budget
    from gateway.money.periods import Periods

    async def run() -> tuple[bool, bool, bool, budget.KeyUsage]:
        client = Redis.from_url(redis_server.url)
        try:
            secret, record = await KeyStore(client).create(KeyCreate(team="t", name="cancel", budget_usd="5"))
            token = parse_token(secret)
            assert token is not None
            space = KeySpace(record["key_id"], "t")
            assert isinstance(await reserve_one(client, space, token[1], "req_ran_first"), budget.Reservation)
            released = await budget.cancel(client, space=space, request_id="req_ran_first")
            not_released = await budget.cancel(client, space=space, request_id="req_still_queued")
            try:
                await reserve_one(client, space, token[1], "req_still_queued")
                refused = False
            except budget.ReserveTooLate:
                refused = True
            return released, not_released, refused, await budget.usage(client, space, Periods.now())
        finally:
            await client.aclose()

    released, not_released, refused, usage = asyncio.run(run())
    assert (released, not_released, refused) == (True, False, True)
    assert (usage.reserved_micros, usage.inflight) == (0, 0)
