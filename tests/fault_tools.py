"""Small helpers shared by the fault, bad-input and security tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis

from gateway.store.keyspace import directory_entry
from tests.support import (
    MODEL_PRICE_MICROS,
    TLS,
    Gateway,
    RedisServer,
    agenerate,
    key_space,
    wait_until,
)

PRICE = Decimal(MODEL_PRICE_MICROS) / 1_000_000


async def generate_many(gateway: Gateway, key: str, count: int, fault: str | None) -> list[httpx.Response]:
    body: dict[str, Any] = {"prompt": "many", **({"simulator_fault": fault} if fault else {})}
    async with httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=count), verify=TLS
    ) as client:
        return await asyncio.gather(*(agenerate(client, key, gateway, **body) for _ in range(count)))


def lose_redis_mid_call(
    gateway: Gateway, redis: RedisServer, key: str, key_id: str, calls: int
) -> list[httpx.Response]:
    """Start ``calls`` slow calls, kill Redis once all are reserved, let the upstream answer."""

    async def run() -> list[httpx.Response]:
        task = asyncio.create_task(generate_many(gateway, key, calls, "delay=1.5"))
        await asyncio.to_thread(
            wait_until, lambda: gateway.usage(key_id)["inflight"] == calls, 10, what="all calls reserved"
        )
        redis.kill()
        return await task

    return asyncio.run(run())


def doomed_gateway(
    gateway_factory: Callable[..., Gateway], redis_url: str, upstream_url: str, wait_ready: bool = True
) -> Gateway:
    """A gateway to be killed with calls in flight: its reservations lapse 3 s after their call
    (upstream timeout 2 s + grace 1 s). What it leaves is seen through a gateway already running
    (the session's, or one started beside it: a start-up on a loaded machine can outlast 3 s)."""
    return gateway_factory(
        redis_url,
        upstream_url,
        wait_ready=wait_ready,
        GATEWAY_UPSTREAM_TIMEOUT_S="2",
        GATEWAY_RESERVATION_GRACE_S="1",
    )


def spooled_records(state_dir: Path) -> int:
    """Records on disk in the spool directory, counted from the files themselves."""
    return sum(len(p.read_bytes().splitlines()) for p in (state_dir / "spool").glob("*.jsonl"))


def assert_envelope(response: httpx.Response, status: int, code: str | None, retry: bool) -> dict[str, Any]:
    """The OpenAI error envelope with the expected status, code and ``x-should-retry``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"] and isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, error
    assert response.headers["x-should-retry"] == ("true" if retry else "false")
    return dict(error)


def ledger(redis_url: str, key_id: str) -> list[dict[str, str]]:
    """The key's ledger stream, each record as a dict of strings ([] for a key this store never had)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        if not client.exists(directory_entry(key_id)):
            return []
        return [fields for _, fields in client.xrange(key_space(client, key_id).ledger)]
    finally:
        client.close()


def spent(gateway: Gateway, key_id: str) -> Decimal:
    return Decimal(gateway.usage(key_id)["spent_usd"])


def reserved(gateway: Gateway, key_id: str) -> Decimal:
    return Decimal(gateway.usage(key_id)["reserved_usd"])


def raw_http(port: int, request: bytes, timeout_s: float = 10.0) -> bytes:
    """Send bytes exactly as given (no client library cleaning them up); the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse_raw_response(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of one HTTP/1.1 answer read to the end of the connection."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return status, headers, body
