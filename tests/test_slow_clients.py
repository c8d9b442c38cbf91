"""Strangers sending slow bodies must not take the capacity meant for teams.

A few hundred loopback connections with a made-up key, ``Content-Length: 100000`` and a byte
now and then, spread over many source addresses (127.0.0.2 and up: all of 127/8 is loopback),
while real calls with a real key go on from 127.0.0.1. The gateway's in-flight cap is tiny (4),
so before the fix the slow ones held every slot and the real calls got 503 ``overloaded``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support import TLS, Gateway, RedisServer, Simulator, agenerate, gateway_env, wait_until

ADDRESSES = [f"127.0.0.{i}" for i in range(2, 27)]  # 25 source addresses
PER_ADDRESS = 8  # GATEWAY_MAX_PENDING_PER_CLIENT in this test
DEADLINE_S = 8.0  # GATEWAY_BODY_TIMEOUT_S in this test
FAKE_KEY = "sk-gw-abcdefghijkl_" + "x" * 40  # well-formed, unknown


@pytest.fixture(scope="module")
def guarded(
    redis_server: RedisServer, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway for the module: every test's slow connections are answered or closed before it
    ends, so the next test finds no body pending."""
    directory = tmp_path_factory.mktemp("slow-clients")
    env = gateway_env(
        redis_server.url,
        simulator.url,
        directory / "state",
        GATEWAY_MAX_INFLIGHT="4",
        GATEWAY_BODY_TIMEOUT_S=str(DEADLINE_S),
        GATEWAY_MAX_PENDING_PER_CLIENT=str(PER_ADDRESS),
    )
    gateway = Gateway(env, directory / "gateway.log")
    try:
        yield gateway.start()
    finally:
        gateway.stop()


class SlowClient:
    """One connection that declares 100,000 bytes of body and sends a byte a second."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.status: int | None = None  # None: the gateway closed without an answer
        self.head = b""
        self.held_s = 0.0
        self.done = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.source, 0))
        started = time.monotonic()
        writer.write(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: gw\r\n"
            + f"Authorization: Bearer {FAKE_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        answer = asyncio.ensure_future(reader.read(4096))
        try:
            # The attacker's own pace, not a wait for the gateway: a byte a second until answered,
            # bounded by the deadline plus a margin (the test then fails on the status).
            while not answer.done() and time.monotonic() - started < DEADLINE_S + 20:
                writer.write(b" ")
                await asyncio.wait({answer}, timeout=1.0)
            head = answer.result() if answer.done() else b""
            if head:  # the head and the body may come in two reads: read to the close
                head += await asyncio.wait_for(reader.read(), timeout=10)
        except (ConnectionError, OSError):
            head = b""
        finally:
            answer.cancel()
            writer.close()
        self.held_s = time.monotonic() - started
        self.head = head
        if head.startswith(b"HTTP/1.1 "):
            self.status = int(head[9:12])
        self.done.set()


async def attack_and_call(gateway: Gateway, key: str) -> tuple[list[SlowClient], list[int], int]:
    port = gateway.port
    # One more than the cap from each address: exactly one of each group is refused at once.
    slow = [SlowClient(port, source) for source in ADDRESSES for _ in range(PER_ADDRESS + 1)]
    tasks = [asyncio.ensure_future(client.run()) for client in slow]
    deadline = time.monotonic() + 30
    while sum(client.status == 429 for client in slow) < len(ADDRESSES):  # every address at its cap
        assert time.monotonic() < deadline, Counter(c.status for c in slow if c.done.is_set())
        await asyncio.wait(
            [asyncio.ensure_future(c.done.wait()) for c in slow if not c.done.is_set()],
            timeout=0.5,
            return_when=asyncio.FIRST_COMPLETED,
        )
    pending_before = sum(not client.done.is_set() for client in slow)

    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, verify=TLS) as client:
        for _ in range(3):
            replies = await asyncio.gather(
                *(agenerate(client, key, prompt="a fox", size="64x64") for _ in range(3))
            )
            statuses += [reply.status_code for reply in replies]
    still_pending = sum(not client.done.is_set() for client in slow)
    await asyncio.gather(*tasks)
    assert still_pending == pending_before, "the real calls must have run while the slow ones held on"
    return slow, statuses, pending_before


def test_slow_bodies_from_strangers_do_not_block_real_calls(guarded: Gateway) -> None:
    key, _ = guarded.create_key()
    slow, statuses, pending = asyncio.run(attack_and_call(guarded, key))

    assert statuses == [200] * 9, statuses
    assert pending == len(ADDRESSES) * PER_ADDRESS
    outcomes = Counter(client.status for client in slow)
    assert outcomes[429] == len(ADDRESSES), outcomes  # beyond the per-address cap: refused at once
    timed_out = [client for client in slow if client.status != 429]
    assert {client.status for client in timed_out} <= {408, None}, outcomes
    assert all(DEADLINE_S - 0.5 <= client.held_s <= DEADLINE_S + 10 for client in timed_out), sorted(
        round(client.held_s, 1) for client in timed_out
    )
    log = guarded.log()
    assert "Traceback" not in log, log[-3000:]


def test_a_body_read_past_the_deadline_is_408_in_the_openai_envelope(guarded: Gateway) -> None:
    async def one() -> SlowClient:
        client = SlowClient(guarded.port, "127.0.0.1")
        await client.run()
        return client

    client = asyncio.run(one())
    assert client.status == 408 and DEADLINE_S - 0.5 <= client.held_s, (client.status, client.held_s)
    assert b'"code":"request_timeout"' in client.head and b"connection: close" in client.head.lower()


def test_a_client_that_hangs_up_mid_body_is_logged_in_one_line(guarded: Gateway) -> None:
    import socket

    logged_before = len(guarded.log())  # the module's gateway: only what this test adds counts
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: gw\r\n"
            + f"Authorization: Bearer {FAKE_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )

    def added() -> str:
        return guarded.log()[logged_before:]

    wait_until(lambda: "client_closed" in added(), timeout_s=15, what="the one-line log of the drop")
    assert "Traceback" not in guarded.log(), guarded.log()[-3000:]
