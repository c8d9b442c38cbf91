"""Redis faults: fail closed for new spending, never lose a record of money already spent.

Each test kills its own Redis (from ``redis_factory``), never the session one, and starts it
again on the same port and data directory, as an operator restarting it would.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gateway.money.spool import Spool
from gateway.store.client import SOCKET_TIMEOUT_S
from tests.fault_tools import (
    PRICE,
    assert_envelope,
    ledger,
    lose_redis_mid_call,
    reserved,
    spent,
    spooled_records,
)
from tests.support import TLS, Gateway, RedisServer, Simulator, generate, key_space, metric_value, wait_until

PENDING = "gateway_spool_pending_records"


def test_redis_down_refuses_new_calls_at_once_and_recovers_by_itself(
    redis_factory, simulator: Simulator, gateway_factory
) -> None:
    redis = redis_factory()
    gateway = gateway_factory(redis.url, simulator.url)
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    assert generate(gateway, key).status_code == 200
    calls_before = simulator.count()

    redis.kill()
    for _ in range(3):
        started = time.monotonic()
        response = generate(gateway, key)
        elapsed = time.monotonic() - started
        error = assert_envelope(response, 503, "service_unavailable", retry=True)
        assert error["type"] == "server_error"
        assert int(response.headers["retry-after"]) >= 1
        # Fails at once, not after a hang: well within the Redis socket timeout plus slack.
        assert elapsed < SOCKET_TIMEOUT_S + 3, elapsed
    models = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, verify=TLS)
    assert_envelope(models, 503, "service_unavailable", retry=True)
    ready = httpx.get(f"{gateway.url}/readyz", timeout=10, verify=TLS)
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] is False
    assert httpx.get(f"{gateway.url}/healthz", verify=TLS).status_code == 200  # alive, just not ready
    assert simulator.count() == calls_before, "nothing may reach the upstream without a reservation"
    assert metric_value(gateway.metrics(), "gateway_redis_errors_total") >= 3
    assert metric_value(gateway.metrics(), "gateway_rejections_total", reason="redis_unavailable") >= 3

    redis.start()  # same port, same data
    wait_until(lambda: generate(gateway, key).status_code == 200, timeout_s=20, what="recovery")
    assert httpx.get(f"{gateway.url}/readyz", verify=TLS).status_code == 200
    assert spent(gateway, key_id) == 2 * PRICE
    assert reserved(gateway, key_id) == 0


def test_a_gateway_started_before_its_redis_prices_calls_once_redis_comes_up(
    simulator: Simulator, gateway_factory, tmp_path: Path
) -> None:
    """Started while Redis is unreachable, on a store that has never held a price table: once
    Redis answers, the configured prices are seeded and calls are charged by them (they were
    404 model_not_found until a restart)."""
    redis = RedisServer(tmp_path / "late-redis")  # not started yet: its port refuses
    gateway = gateway_factory(redis.url, simulator.url, wait_ready=False)
    wait_until(
        lambda: httpx.get(f"{gateway.url}/healthz", verify=TLS, timeout=2).status_code == 200,
        timeout_s=30,
        what="gateway alive without Redis",
    )
    assert not gateway.ready()

    redis.start()
    try:
        gateway.wait_ready()
        key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
        response = generate(gateway, key)
        assert response.status_code == 200, response.text
        assert spent(gateway, key_id) == PRICE
    finally:
        redis.kill()


def test_a_redis_restart_costs_no_call_once_redis_answers_again(
    redis_factory, simulator: Simulator, gateway_factory
) -> None:
    """The worker's pooled connections all died with the old Redis process: each must be replaced
    before it is used, not fail one call each (redis-py 8 skipped that check: 503s after every
    restart or failover, up to the pool's size per worker)."""
    redis = redis_factory()
    gateway = gateway_factory(redis.url, simulator.url)
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    with ThreadPoolExecutor(16) as pool:  # 16 calls at once: 16 pooled connections in use
        assert {r.status_code for r in pool.map(lambda _: generate(gateway, key), range(16))} == {200}

    redis.kill()
    redis.start()  # same port, same data
    wait_until(
        lambda: httpx.get(f"{gateway.url}/readyz", verify=TLS).status_code == 200, timeout_s=20, what="ready"
    )
    with ThreadPoolExecutor(16) as pool:
        statuses = Counter(r.status_code for r in pool.map(lambda _: generate(gateway, key), range(32)))
    assert statuses == {200: 32}
    assert spent(gateway, key_id) == 48 * PRICE


def _assert_ledger_complete(
    gateway: Gateway, redis: RedisServer, key_id: str, responses: list[httpx.Response]
) -> None:
    """Every delivered call has exactly one ledger record, and the spend is what was delivered."""
    records = ledger(redis.url, key_id)
    delivered = [r.headers["x-request-id"] for r in responses]
    assert Counter(r["request_id"] for r in records) == Counter(delivered), "lost or doubled records"
    assert all(r["images"] == "1" and r["outcome"] == "ok" for r in records)
    charged = sum(int(r["charge_micros"]) for r in records)
    assert spent(gateway, key_id) == len(delivered) * PRICE == Decimal(charged) / 1_000_000
    usage = gateway.usage(key_id)
    assert reserved(gateway, key_id) == 0 and usage["inflight"] == 0
    assert usage["images_today"] == len(delivered)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_redis_lost_after_upstream_answered_caller_gets_images_and_spool_settles_once(
    workers: str, redis_factory, simulator: Simulator, gateway_factory, tmp_path: Path
) -> None:
    redis = redis_factory()
    state_dir = tmp_path / "state"
    gateway = gateway_factory(
        redis.url, simulator.url, GATEWAY_WORKERS=workers, GATEWAY_STATE_DIR=str(state_dir)
    )
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    calls = 8
    calls_before = simulator.count()

    responses = lose_redis_mid_call(gateway, redis, key, key_id, calls)

    assert [r.status_code for r in responses] == [200] * calls, [r.text[:200] for r in responses]
    assert all(len(r.json()["data"]) == 1 for r in responses)
    assert simulator.count() - calls_before == calls
    assert spooled_records(state_dir) == calls
    wait_until(lambda: metric_value(gateway.metrics(), PENDING) == calls, what="pending gauge up")

    redis.start()
    wait_until(lambda: spent(gateway, key_id) == calls * PRICE, timeout_s=20, what="spool replayed")
    wait_until(lambda: metric_value(gateway.metrics(), PENDING) == 0, what="pending gauge back to 0")
    assert spooled_records(state_dir) == 0
    _assert_ledger_complete(gateway, redis, key_id, responses)


def test_spool_left_by_a_stopped_gateway_is_replayed_once_by_the_next(
    redis_factory, simulator: Simulator, gateway_factory, tmp_path: Path
) -> None:
    redis = redis_factory()
    state_dir = tmp_path / "shared-state"
    first = gateway_factory(redis.url, simulator.url, GATEWAY_STATE_DIR=str(state_dir))
    key, key_id = first.create_key(budget_usd="10", budget_period="total")
    responses = lose_redis_mid_call(first, redis, key, key_id, 3)
    assert [r.status_code for r in responses] == [200] * 3
    wait_until(lambda: metric_value(first.metrics(), PENDING) == 3, what="pending gauge up")

    first.stop(signal.SIGTERM)
    assert first.process is not None and first.process.returncode == 0
    assert spooled_records(state_dir) == 3, "a stop with Redis down must leave the spool on disk"
    # As if another replica had spooled the same settlements (say it crashed after settling,
    # before emptying its file): a replay of a replay must not charge twice.
    (original,) = (state_dir / "spool").glob("*.jsonl")
    shutil.copy(original, state_dir / "spool" / "other-replica-1.jsonl")

    second = gateway_factory(redis.url, simulator.url, wait_ready=False, GATEWAY_STATE_DIR=str(state_dir))
    wait_until(
        lambda: httpx.get(f"{second.url}/healthz", verify=TLS).status_code == 200, what="second gateway up"
    )
    wait_until(lambda: metric_value(second.metrics(), PENDING) == 6, what="second gateway sees the spool")

    redis.start()
    wait_until(lambda: spooled_records(state_dir) == 0, timeout_s=20, what="every spool file replayed")
    wait_until(lambda: metric_value(second.metrics(), PENDING) == 0, what="pending gauge back to 0")
    _assert_ledger_complete(second, redis, key_id, responses)


# -- the spool itself, with real files and real processes -------------------------------------


def _append_records(directory: str, name: str, count: int) -> None:
    spool = Spool(Path(directory), name)
    for index in range(count):
        spool.append({"request_id": f"{name}-{index}"})


def _replay_until_told(directory: str, stop: str, seen_path: str) -> None:
    spool = Spool(Path(directory), "replayer")
    seen: list[str] = []

    async def settle(entry: dict) -> None:
        seen.append(entry["request_id"])
        await asyncio.sleep(0)

    async def loop() -> None:
        while not Path(stop).exists():
            await spool.replay(settle)
        await spool.replay(settle)

    asyncio.run(loop())
    Path(seen_path).write_text("\n".join(seen))


def test_spool_loses_nothing_while_processes_append_and_others_replay(tmp_path: Path) -> None:
    """Two replayers empty and remove files while three processes append to them."""
    directory, stop = tmp_path / "spool", tmp_path / "stop"
    directory.mkdir()
    context = multiprocessing.get_context("spawn")
    replayers = [
        context.Process(
            target=_replay_until_told, args=(str(directory), str(stop), str(tmp_path / f"seen{i}"))
        )
        for i in range(2)
    ]
    appenders = [
        context.Process(target=_append_records, args=(str(directory), f"worker{i}", 300)) for i in range(3)
    ]
    for process in replayers + appenders:
        process.start()
    for process in appenders:
        process.join(60)
        assert process.exitcode == 0
    stop.touch()
    for process in replayers:
        process.join(60)
        assert process.exitcode == 0
    seen = Counter(
        line for i in range(2) for line in (tmp_path / f"seen{i}").read_text().splitlines() if line
    )
    expected = {f"worker{w}-{i}" for w in range(3) for i in range(300)}
    assert set(seen) == expected, f"{len(expected - set(seen))} records lost"
    assert max(seen.values()) == 1, "a record settled twice without any failure"
    assert Spool(directory, "check").pending() == 0


def test_spool_append_during_a_replay_in_the_same_process_neither_blocks_nor_is_lost(
    tmp_path: Path,
) -> None:
    """A call failing to settle while this process replays its own file (Redis flapping)."""
    spool = Spool(tmp_path / "spool", "me")
    spool.append({"request_id": "old"})
    replayed: list[str] = []

    async def settle(entry: dict) -> None:
        if entry["request_id"] == "old":
            spool.append({"request_id": "new"})  # what a failing settle does, mid-replay
        replayed.append(entry["request_id"])

    finished = threading.Event()

    def run() -> None:
        asyncio.run(spool.replay(settle))
        finished.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert finished.wait(10), "the replay blocked on its own file lock"
    assert replayed == ["old"]
    assert spool.pending() == 1, "the record appended during the replay was lost"
    asyncio.run(spool.replay(settle))
    assert replayed == ["old", "new"] and spool.pending() == 0


def test_spool_keeps_a_refused_record_and_replays_the_others(tmp_path: Path) -> None:
    from gateway.money.spool import RecordRefused

    spool = Spool(tmp_path / "spool", "me")
    for request_id in ("a", "poison", "b"):
        spool.append({"request_id": request_id})
    settled: list[str] = []

    async def settle(entry: dict) -> None:
        if entry["request_id"] == "poison":
            raise RecordRefused("WRONGTYPE")
        settled.append(entry["request_id"])

    assert asyncio.run(spool.replay(settle)) == 2
    assert settled == ["a", "b"] and spool.pending() == 1


def test_redis_down_during_replay_keeps_the_rest_for_later(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "me")
    for request_id in ("a", "b", "c"):
        spool.append({"request_id": request_id})
    settled: list[str] = []

    async def settle(entry: dict) -> None:
        if entry["request_id"] == "b" and "b-failed" not in settled:
            settled.append("b-failed")
            raise ConnectionError("Redis went away again")
        settled.append(entry["request_id"])

    with pytest.raises(ConnectionError):
        asyncio.run(spool.replay(settle))
    assert spool.pending() == 2  # b and c wait; a is done
    assert asyncio.run(spool.replay(settle)) == 2
    assert settled == ["a", "b-failed", "b", "c"] and spool.pending() == 0


def _scripts_run(redis: RedisServer) -> int:
    """How many scripts Redis has run: read from INFO, which runs none itself."""
    client = redis.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))


def test_a_reserve_answered_503_during_a_redis_stall_holds_nothing_once_redis_resumes(
    redis_factory, simulator: Simulator, gateway_factory
) -> None:
    """Redis paused (SIGSTOP): the caller is told 503 after the command timeout. When Redis
    resumes it runs the queued reserve; that must not hold money or the key's only slot."""
    redis = redis_factory()
    gateway = gateway_factory(redis.url, simulator.url)
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total", max_concurrent=1)
    assert generate(gateway, key).status_code == 200
    assert redis.process is not None
    scripts_before = _scripts_run(redis)

    redis.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        stalled = generate(gateway, key)
        assert time.monotonic() - started >= SOCKET_TIMEOUT_S - 0.1
        assert_envelope(stalled, 503, "service_unavailable", retry=True)
    finally:
        redis.process.send_signal(signal.SIGCONT)
    # Redis serves the sockets that became readable while it was paused before it accepts and
    # reads a connection made after it resumed: once a fresh connection's command is answered,
    # the queued reserve has run (if it was sent at all: the gateway may have timed out still
    # setting up a new connection, and then nothing was queued).
    wait_until(redis.ping, what="redis answering again")
    assert _scripts_run(redis) >= scripts_before

    state = redis.client()

    def holds_nothing() -> bool:
        space = key_space(state, key_id)
        held = {k.decode(): v.decode() for k, v in state.hgetall(space.state).items()}
        nothing = int(held.get("inflight", 0)) == 0 and int(held.get("reserved_micros", 0)) == 0
        return nothing and state.hlen(space.reservations) == 0

    try:  # the gateway's cancel reaches Redis within its retry interval once Redis answers
        wait_until(holds_nothing, timeout_s=10, what="the timed-out reserve to hold nothing")
    finally:
        state.close()
    assert generate(gateway, key).status_code == 200, "the key's one concurrency slot is free"
    assert spent(gateway, key_id) == PRICE * 2 and reserved(gateway, key_id) == 0
