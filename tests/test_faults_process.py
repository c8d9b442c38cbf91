"""Process faults: SIGTERM lets calls in flight finish and exits cleanly.

(SIGKILL, and the reservation coming back after its bound, is tested in test_budget.py.)
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.fault_tools import PRICE, generate_many, ledger, reserved, spent
from tests.support import TLS, Gateway, RedisServer, Simulator, wait_until


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_calls_in_flight_finish_and_exits_cleanly(
    workers: str, redis_server: RedisServer, simulator: Simulator, gateway_factory, gateway: Gateway
) -> None:
    stopping = gateway_factory(redis_server.url, simulator.url, GATEWAY_WORKERS=workers)
    key, key_id = stopping.create_key(budget_usd="10", budget_period="total")
    calls, upstream_s = 4, 2.0
    assert stopping.process is not None

    async def run() -> tuple[list[httpx.Response], float]:
        task = asyncio.create_task(generate_many(stopping, key, calls, f"delay={upstream_s}"))
        await asyncio.to_thread(
            wait_until, lambda: stopping.usage(key_id)["inflight"] == calls, 10, what="calls in flight"
        )
        stopping.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        responses = await task
        return responses, time.monotonic() - signalled

    responses, after_signal_s = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * calls, [r.text[:200] for r in responses]
    assert all(len(r.json()["data"]) == 1 for r in responses)
    assert after_signal_s > 0.5, "the calls finished before the signal: the test proved nothing"
    assert stopping.process.wait(30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stopping.url}/healthz", timeout=2, verify=TLS)
    # The stopped gateway cannot be asked; the session's, on the same Redis, can.
    usage = gateway.usage(key_id)
    assert spent(gateway, key_id) == calls * PRICE
    assert reserved(gateway, key_id) == 0 and usage["inflight"] == 0, "the budget must not stay held"
    assert {r["request_id"] for r in ledger(redis_server.url, key_id)} == {
        r.headers["x-request-id"] for r in responses
    }


def test_sigterm_with_nothing_in_flight_exits_at_once(
    redis_server: RedisServer, simulator: Simulator, gateway_factory
) -> None:
    gateway = gateway_factory(redis_server.url, simulator.url)
    assert gateway.process is not None
    started = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(30) == 0
    assert time.monotonic() - started < 5, "an idle gateway must not wait out the grace period"
