"""Bursts: thousands of calls arriving at once on one worker never look like a Redis outage.

Before, every concurrent Redis command took its own connection: a burst opened thousands at once,
connects missed their timeout and healthy Redis answered as 503s. Now a worker opens at most
GATEWAY_REDIS_MAX_CONNECTIONS and commands wait their turn; with Redis really down they still
fail at once. The load comes from bench/loadgen.py (one process, raw asyncio), which can hold
thousands of connections without becoming the bottleneck of the test.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
import redis

from gateway.core.settings import Settings
from gateway.store.slots import SLOT_WAIT_S
from tests.support import MODEL, ROOT, Gateway, RedisServer, wait_until

REDIS_MAX_CONNECTIONS = Settings.model_fields["redis_max_connections"].default

BURST = 3000
BOUND = 16  # small, so that the burst really has to share connections


def burst(gateway: Gateway, key: str, calls: int, timeout_s: float = 120) -> dict[str, Any]:
    """``calls`` new connections each send one image call in the same instant; the loadgen's result.

    A correctness test, not a speed one: the client waits as long as a starved 2-core machine
    may need (a 60 s wait saw client timeouts at a load average of 10)."""
    body = json.dumps({"model": MODEL, "prompt": "burst", "n": 1})
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(gateway.port),
        "--connections",
        str(calls),
        "--rounds",
        "1",
        "--body",
        body,
        "--header",
        f"Authorization: Bearer {key}",
        "--timeout",
        str(timeout_s),
        "--deadline",
        str(timeout_s + 30),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout_s + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("result ")]
    assert lines, f"load generator failed: {done.stderr[-2000:]}"
    return dict(json.loads(lines[-1][len("result ") :]))


class ClientCounter:
    """Samples Redis' own count of connected clients until stopped; keeps the highest."""

    def __init__(self, server: RedisServer) -> None:
        self.client = redis.Redis.from_url(server.url)
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ClientCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            connected = int(self.client.info("clients")["connected_clients"]) - 1  # less this one
            self.peak = max(self.peak, connected)
            self.samples += 1


@pytest.mark.timeout(300)
def test_burst_of_thousands_gets_no_503_and_a_bounded_number_of_redis_connections(
    redis_factory, simulator_factory, gateway_factory
) -> None:
    server = redis_factory()
    upstream = simulator_factory(latency_s=2.0)  # every call is in flight at the same time
    gateway = gateway_factory(
        server.url,
        upstream.url,
        GATEWAY_MAX_INFLIGHT=str(BURST + 100),
        GATEWAY_REDIS_MAX_CONNECTIONS=str(BOUND),
        GATEWAY_LOG_LEVEL="warning",
    )
    key, key_id = gateway.create_key(budget_usd="100000", budget_period="total")

    with ClientCounter(server) as clients:
        result = burst(gateway, key, BURST)
        wait_until(lambda: clients.samples > 0, what="a sample of Redis' clients")

    assert result["statuses"] == {"200": BURST}, result["error_kinds"]
    assert 1 <= clients.peak <= BOUND, clients.peak
    assert upstream.count() == BURST
    usage = gateway.usage(key_id)
    assert usage["inflight"] == 0 and usage["images_today"] == BURST


def test_burst_with_redis_down_is_answered_503_at_once_not_queued(
    redis_factory, simulator_factory, gateway_factory
) -> None:
    server = redis_factory()
    upstream = simulator_factory()
    gateway = gateway_factory(
        server.url, upstream.url, GATEWAY_REDIS_MAX_CONNECTIONS="4", GATEWAY_LOG_LEVEL="warning"
    )
    key, _ = gateway.create_key(budget_usd="100", budget_period="total")
    assert burst(gateway, key, 20)["statuses"] == {"200": 20}

    server.kill()
    result = burst(gateway, key, 500)

    assert result["statuses"] == {"503": 500}, result["error_kinds"]
    # Far more calls than connections, yet none waited for a connection: with Redis down a
    # command that finds every connection busy fails at once instead of queueing.
    assert result["slowest_answer_ms"] < 1000 * SLOT_WAIT_S, result["slowest_answer_ms"]
    assert upstream.count() == 20, "nothing may reach the upstream without a reservation"


@pytest.mark.timeout(180)
def test_out_of_file_descriptors_calls_wait_for_one_instead_of_502(
    redis_factory, simulator_factory, gateway_factory
) -> None:
    """A worker whose open-file limit cannot hold every call's two sockets: the calls that find
    no descriptor for their upstream connection wait for one (nothing was sent), never 502."""
    calls = 200
    server = redis_factory()
    upstream = simulator_factory(latency_s=1.0)
    gateway = gateway_factory(server.url, upstream.url, GATEWAY_LOG_LEVEL="warning")
    key, key_id = gateway.create_key(budget_usd="100000", budget_period="total")
    assert burst(gateway, key, 20)["statuses"] == {"200": 20}  # Redis and upstream pools warm
    assert gateway.process is not None and server.process is not None
    pid = gateway.process.pid  # one worker: uvicorn serves in this very process
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    # Room for every caller's socket and every Redis connection the worker may still open (the
    # warm-up opened only some of GATEWAY_REDIS_MAX_CONNECTIONS), but for only half of the upstream
    # connections.
    limit = in_use + calls + REDIS_MAX_CONNECTIONS + calls // 2
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))

    # The shortage must meet the upstream connects, not the accepts: under uvloop an accept that
    # finds no descriptor closes the caller's connection (libuv's way), which is not what this
    # test is about. So Redis is paused until every caller is accepted: no call can reserve, hence
    # none can connect upstream, before then.
    os.kill(server.process.pid, signal.SIGSTOP)
    result: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: result.update(burst(gateway, key, calls)))
    try:
        sender.start()
        wait_until(lambda: accepted_connections(pid, gateway.port) >= calls, what="every caller accepted")
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    sender.join(240)

    assert result["statuses"] == {"200": calls}, result["error_kinds"]
    assert "out of file descriptors" in gateway.log(), "the shortage was never reached: proved nothing"
    assert upstream.count() == 20 + calls
    assert gateway.usage(key_id)["inflight"] == 0


def accepted_connections(pid: int, port: int) -> int:
    """Connections to ``port`` that process ``pid`` has accepted (a socket still in the listen
    queue has no descriptor in any process yet)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                    count += 1
    return count
