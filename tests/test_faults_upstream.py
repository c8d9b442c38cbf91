"""Upstream faults: each maps to the right status and reason, costs nothing, and is counted.

A 200 whose body cannot be read is not silently free: it is recorded in the ledger with
``reconcile=1``, and so is every call whose request reached the upstream before it failed (a
timeout, a connection dropped after the request was written): the upstream may have made and
billed its images. One refused before anything was sent is not. A caller who leaves while the
upstream works is still charged (the upstream bills us regardless), and the record says the
client left.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fault_tools import PRICE, assert_envelope, ledger, reserved, spent
from tests.support import (
    MODEL,
    Gateway,
    RedisServer,
    Simulator,
    free_port,
    gateway_env,
    generate,
    metric_value,
    wait_until,
)

TIMEOUT_S = 1


def _start_gateway(redis: RedisServer, upstream_url: str, directory: Path) -> Gateway:
    env = gateway_env(redis.url, upstream_url, directory / "state", GATEWAY_UPSTREAM_TIMEOUT_S=str(TIMEOUT_S))
    return Gateway(env, directory / "gateway.log").start()


@pytest.fixture(scope="module")
def gateway_1s(redis_server: RedisServer, simulator: Simulator, tmp_path_factory) -> Iterator[Gateway]:
    """A gateway in front of the simulator that gives the upstream one second."""
    gateway = _start_gateway(redis_server, simulator.url, tmp_path_factory.mktemp("gw-1s"))
    yield gateway
    gateway.stop()


class _Handler(socketserver.BaseRequestHandler):
    """Reads one HTTP request, then misbehaves as the body's ``"upstream_mode"`` says."""

    server: _OddUpstream

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            head += chunk
        header, _, body = head.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += self.request.recv(65536)
        mode = orjson.loads(body).get("upstream_mode")
        if mode == "hang":
            self.server.release.wait(30)
        elif mode == "close":
            self.request.shutdown(socket.SHUT_RDWR)
        else:
            answer = self.server.answers[mode]
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + b"Content-Length: %d\r\n\r\n" % len(answer)
                + answer
            )


class _OddUpstream(socketserver.ThreadingTCPServer):
    """A real HTTP server on loopback for answers the simulator does not give."""

    daemon_threads = True
    allow_reuse_address = True
    answers = {
        "no_data": b'{"created": 1730000000, "usage": {"generated_images": 1}}',
        "data_not_a_list": b'{"created": 1730000000, "data": {"url": "https://example.com/a.png"}}',
        "array": b'[{"url": "https://example.com/a.png"}]',
    }

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def odd_gateway(redis_server: RedisServer, tmp_path_factory) -> Iterator[Gateway]:
    upstream = _OddUpstream()
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    gateway = _start_gateway(redis_server, upstream.url, tmp_path_factory.mktemp("gw-odd"))
    yield gateway
    gateway.stop()
    upstream.release.set()
    upstream.shutdown()
    upstream.server_close()


def _errors(gateway: Gateway, reason: str) -> float:
    return metric_value(gateway.metrics(), "gateway_upstream_errors_total", model=MODEL, reason=reason)


def _assert_failed_call_is_free_and_recorded(
    gateway: Gateway, redis: RedisServer, key_id: str, outcome: str, reconcile: bool
) -> None:
    assert reserved(gateway, key_id) == 0, "the reservation must be released"
    assert spent(gateway, key_id) == 0
    (record,) = ledger(redis.url, key_id)
    assert record["outcome"] == outcome
    assert record["images"] == "0" and record["charge_micros"] == "0"
    assert record["reconcile"] == ("1" if reconcile else "0")


SIMULATOR_FAULTS = [
    # fault, status, code, x-should-retry, metric reason
    ("status=500", 502, "upstream_error", True, "5xx"),
    ("status=502", 502, "upstream_error", True, "5xx"),
    ("status=503", 502, "upstream_error", True, "5xx"),
    ("status=429", 429, "rate_limit_exceeded", True, "rate_limited"),
    ("status=402", 502, "upstream_insufficient_balance", False, "insufficient_balance"),
    ("status=401", 502, "upstream_auth_failed", False, "auth"),
    ("status=403", 502, "upstream_auth_failed", False, "auth"),
    ("status=418", 502, "upstream_error", False, "4xx"),
    (
        "status=400,code=OutputImageSensitiveContentDetected",
        400,
        "OutputImageSensitiveContentDetected",
        False,
        "content_safety",
    ),
    ("drop=1", 502, "upstream_unavailable", True, "connect"),
    (f"delay={TIMEOUT_S + 4}", 504, "upstream_timeout", True, "timeout"),
    ("garbage=1", 502, "upstream_bad_response", False, "bad_response"),
    ("garbage=truncated", 502, "upstream_bad_response", False, "bad_response"),
]


@pytest.mark.parametrize(("fault", "status", "code", "retry", "reason"), SIMULATOR_FAULTS)
def test_upstream_fault_maps_to_status_releases_reservation_and_is_counted(
    gateway_1s: Gateway,
    redis_server: RedisServer,
    fault: str,
    status: int,
    code: str,
    retry: bool,
    reason: str,
) -> None:
    key, key_id = gateway_1s.create_key(budget_usd="10", budget_period="total")
    before = _errors(gateway_1s, reason)
    started = time.monotonic()
    response = generate(gateway_1s, key, simulator_fault=fault)
    assert time.monotonic() - started < TIMEOUT_S + 3  # a timeout is the gateway's, not the caller's
    assert_envelope(response, status, code, retry)
    if status == 429:
        assert 1 <= int(response.headers["retry-after"]) <= 60
    assert _errors(gateway_1s, reason) == before + 1
    sent_then_lost = reason in ("bad_response", "timeout") or fault == "drop=1"
    _assert_failed_call_is_free_and_recorded(gateway_1s, redis_server, key_id, reason, sent_then_lost)


@pytest.mark.parametrize("mode", ["no_data", "data_not_a_list", "array"])
def test_unreadable_200_is_recorded_for_reconciliation(
    odd_gateway: Gateway, redis_server: RedisServer, mode: str
) -> None:
    key, key_id = odd_gateway.create_key(budget_usd="10", budget_period="total")
    before = _errors(odd_gateway, "bad_response")
    response = generate(odd_gateway, key, upstream_mode=mode)
    error = assert_envelope(response, 502, "upstream_bad_response", retry=False)
    assert "reconciliation" in error["message"]
    assert _errors(odd_gateway, "bad_response") == before + 1
    _assert_failed_call_is_free_and_recorded(odd_gateway, redis_server, key_id, "bad_response", True)
    (record,) = ledger(redis_server.url, key_id)
    assert record["upstream_status"] == "200"


@pytest.mark.parametrize(
    ("mode", "status", "code", "reason"),
    [("hang", 504, "upstream_timeout", "timeout"), ("close", 502, "upstream_unavailable", "connect")],
)
def test_hung_or_closing_upstream_is_a_timely_retryable_error_free_and_reconciled(
    odd_gateway: Gateway, redis_server: RedisServer, mode: str, status: int, code: str, reason: str
) -> None:
    key, key_id = odd_gateway.create_key(budget_usd="10", budget_period="total")
    before = _errors(odd_gateway, reason)
    started = time.monotonic()
    response = generate(odd_gateway, key, upstream_mode=mode)
    assert time.monotonic() - started < TIMEOUT_S + 3
    assert_envelope(response, status, code, retry=True)
    assert _errors(odd_gateway, reason) == before + 1
    # The request was written before the upstream hung or closed: it may have been generated.
    _assert_failed_call_is_free_and_recorded(odd_gateway, redis_server, key_id, reason, True)


def test_unreachable_upstream_is_a_prompt_retryable_502_free_and_recorded(
    redis_server: RedisServer, gateway_factory
) -> None:
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    gateway = gateway_factory(redis_server.url, nothing_listens)
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    started = time.monotonic()
    response = generate(gateway, key)
    assert time.monotonic() - started < 5
    assert_envelope(response, 502, "upstream_unavailable", retry=True)
    assert _errors(gateway, "connect") == 1
    _assert_failed_call_is_free_and_recorded(gateway, redis_server, key_id, "connect", False)


def test_caller_who_leaves_is_still_charged_and_recorded(
    gateway_1s: Gateway, redis_server: RedisServer, simulator: Simulator
) -> None:
    key, key_id = gateway_1s.create_key(budget_usd="10", budget_period="total")
    calls_before = simulator.count()
    with pytest.raises(httpx.ReadTimeout):
        # Gone long before the upstream answers.
        generate(gateway_1s, key, simulator_fault="delay=0.8", timeout=0.2)
    wait_until(lambda: spent(gateway_1s, key_id) == PRICE, what="the call charged after the caller left")
    assert simulator.count() - calls_before == 1
    (record,) = ledger(redis_server.url, key_id)
    assert record["client_left"] == "1"
    assert record["outcome"] == "ok" and record["images"] == "1"
    assert Decimal(record["charge_micros"]) / 1_000_000 == PRICE
    assert reserved(gateway_1s, key_id) == 0


def test_sdk_retry_while_the_first_call_is_in_flight_is_not_charged_twice(
    gateway_1s: Gateway, simulator: Simulator
) -> None:
    """A client times out and retries with the same Idempotency-Key while the upstream still works."""
    key, key_id = gateway_1s.create_key(budget_usd="10", budget_period="total")
    headers = {"Idempotency-Key": "retry-" + key_id}
    body = {"simulator_fault": "delay=0.8"}
    calls_before = simulator.count()
    with pytest.raises(httpx.ReadTimeout):
        generate(gateway_1s, key, headers=headers, timeout=0.2, **body)
    retry = generate(gateway_1s, key, headers=headers, **body)
    assert_envelope(retry, 409, "idempotency_key_in_progress", retry=True)

    def replayed() -> httpx.Response | None:
        response = generate(gateway_1s, key, headers=headers, **body)
        return response if response.status_code == 200 else None

    replay = wait_until(replayed, what="the first result replayed")
    assert replay.headers["x-idempotent-replayed"] == "true"
    assert len(replay.json()["data"]) == 1
    assert simulator.count() - calls_before == 1
    assert spent(gateway_1s, key_id) == PRICE
