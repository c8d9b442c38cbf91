"""Several workers: each accepts on a listening socket of its own (SO_REUSEPORT, Linux), so
keep-alive connections opened together spread over the workers instead of piling onto one.

Real processes and real HTTP: a `gateway serve` with two workers, the simulator, Redis. Which
worker served a request is read from the workers' own prometheus multiprocess files, one per pid.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.cli.workers import ReusePortMultiprocess
from tests.support import (
    TLS,
    Gateway,
    RedisServer,
    Simulator,
    agenerate,
    gateway_env,
    metric_value,
    wait_until,
)

# Linux only, like the gateway's images and CI: SO_REUSEPORT balancing is what these tests show.

CONNECTIONS = 96


@pytest.fixture(scope="module")
def two_workers(
    redis_server: RedisServer, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One `gateway serve` of two workers for the module's tests (a start costs both workers' imports)."""
    directory = tmp_path_factory.mktemp("workers")
    env = gateway_env(
        redis_server.url, simulator.url, directory / "state", GATEWAY_WORKERS="2", GATEWAY_LOG_LEVEL="warning"
    )
    gateway = Gateway(env, directory / "gateway.log")
    try:
        yield gateway.start()
    finally:
        gateway.stop()


def requests_per_worker(gw: Gateway) -> dict[int, float]:
    """pid -> requests that worker answered, from its own multiprocess counter file."""
    (directory,) = (Path(gw.env["GATEWAY_STATE_DIR"]) / "metrics").iterdir()
    out: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        pid = int(path.stem.rsplit("_", 1)[1])
        out[pid] = sum(v for key, v, _, _ in values if json.loads(key)[1] == "gateway_requests_total")
    return out


async def two_rounds(gw: Gateway, key: str) -> list[int]:
    """CONNECTIONS calls at once (each opens a connection: none is idle), then as many again on
    the same kept-alive connections."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits, verify=TLS) as client:
        for _ in range(2):
            replies = await asyncio.gather(
                *(agenerate(client, key, simulator_fault="delay=0.3") for _ in range(CONNECTIONS))
            )
            statuses += [r.status_code for r in replies]
    return statuses


def test_keep_alive_connections_spread_over_both_workers(two_workers: Gateway) -> None:
    gw = two_workers
    key, _ = gw.create_key(team="spread")
    before = requests_per_worker(gw)  # what the module's earlier tests asked, if any
    total_before = metric_value(gw.metrics(), "gateway_requests_total")

    statuses = asyncio.run(two_rounds(gw, key))

    assert statuses == [200] * (2 * CONNECTIONS)

    def served_now() -> dict[int, float]:
        return {pid: n - before.get(pid, 0) for pid, n in requests_per_worker(gw).items()}

    wait_until(lambda: sum(served_now().values()) == 2 * CONNECTIONS, what="every call counted")
    served = served_now()
    assert len(served) == 2, served
    # Each connection carried two calls to one worker. The kernel hashes connections to the two
    # sockets: a share under 20% of 96 is a 1-in-10^8 accident (binomial), and what one socket
    # shared by both workers gave (one worker takes every connection waiting when it wakes).
    assert min(served.values()) >= 0.2 * 2 * CONNECTIONS, served
    total = metric_value(gw.metrics(), "gateway_requests_total")
    assert total - total_before == 2 * CONNECTIONS, "the page sums both"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:  # the 431 protocol
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 431 ")


def worker_pids(gw: Gateway) -> list[int]:
    """The worker processes: the supervisor's children started by multiprocessing's spawn."""
    assert gw.process is not None
    children = Path(f"/proc/{gw.process.pid}/task/{gw.process.pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def waiting_to_be_accepted(port: int) -> int:
    """Connections queued on the listening sockets of ``port`` (for a listening socket, the
    rx_queue column of /proc/net/tcp is its accept queue)."""
    queued = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
            queued += int(fields[4].split(":")[1], 16)
    return queued


def test_connections_go_to_each_workers_socket_whatever_the_workers_are_doing(two_workers: Gateway) -> None:
    """One worker is stopped while the connections arrive. With one socket shared by both, the
    other worker accepts them all (what happened to keep-alive connections opened together: the
    worker that woke first took every one waiting); with a socket each, about half wait for the
    stopped worker, and it serves them once it runs again. The requests are /healthz, answered at
    once, so the worker is stopped for well under the 5 s after which uvicorn's supervisor
    replaces a worker that does not answer its health check."""
    gw = two_workers
    wait_until(lambda: len(worker_pids(gw)) == 2, what="two workers")
    stopped = worker_pids(gw)[0]
    answered: list[int] = []
    queued_while_stopped = 0

    async def run() -> None:
        nonlocal queued_while_stopped
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits, verify=TLS) as client:

            async def one() -> None:
                answered.append((await client.get("/healthz")).status_code)

            os.kill(stopped, signal.SIGSTOP)
            try:
                calls = asyncio.gather(*(one() for _ in range(CONNECTIONS)))
                await asyncio.to_thread(
                    wait_until,
                    lambda: len(answered) + waiting_to_be_accepted(gw.port) == CONNECTIONS,
                    30,
                    what="every connection answered or queued",
                )
                queued_while_stopped = waiting_to_be_accepted(gw.port)
            finally:
                try:
                    os.kill(stopped, signal.SIGCONT)
                except ProcessLookupError:
                    pytest.fail("the stopped worker was replaced as hung: the machine was too slow")
            await calls

    asyncio.run(run())
    assert answered == [200] * CONNECTIONS
    assert queued_while_stopped >= 0.2 * CONNECTIONS, (
        f"{CONNECTIONS - queued_while_stopped} of {CONNECTIONS} connections went to the running worker"
    )


def test_a_second_gateway_on_the_same_port_does_not_join_it(
    redis_server: RedisServer, simulator: Simulator, two_workers: Gateway, tmp_path: Path
) -> None:
    """SO_REUSEPORT would let it take a share of the connections silently: it must fail to start."""
    first = two_workers
    env = gateway_env(redis_server.url, simulator.url, tmp_path / "second-state", GATEWAY_WORKERS="2")
    second = Gateway(env, tmp_path / "second.log", port=first.port).start(wait_ready=False)
    assert second.process is not None
    assert second.process.wait(60) != 0
    assert "address already in use" in second.log().lower(), second.log()[-2000:]
    assert first.ready()


def test_every_place_uvicorn_makes_a_worker_is_overridden() -> None:
    """uvicorn's supervisor makes workers with the shared sockets; an upgrade that adds a place
    doing so would start a worker on every socket."""
    makers = {
        name
        for name, method in inspect.getmembers(Multiprocess, inspect.isfunction)
        if "Process(" in inspect.getsource(method)
    }
    assert makers, "uvicorn's supervisor changed shape: re-read gateway/cli/workers.py"
    assert all(name in ReusePortMultiprocess.__dict__ for name in makers), makers
