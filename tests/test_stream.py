"""``"stream": true`` through the gateway: refusals before the stream, events relayed as they come,
one charge per image made, broken and stalled streams, callers who hang up, many streams on one
budget, SIGTERM, and the official ``openai`` SDK iterating the stream.

Real parts only: redis-server, the simulator over HTTP (its faults in the body's
``simulator_fault``), gateway processes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from tests.fault_tools import PRICE, assert_envelope, ledger, reserved, spent
from tests.support import (
    MODEL,
    TLS,
    UPSTREAM_KEY,
    Gateway,
    RedisServer,
    Simulator,
    free_port,
    metric_value,
    openai_sdk,
    wait_until,
)

GENERATIONS = "/v1/images/generations"
SUCCEEDED = "image_generation.partial_succeeded"
FAILED = "image_generation.partial_failed"
COMPLETED = "image_generation.completed"


def set_of(count: int, fault: str = "stream_gap=0", **fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": "a red fox",
        "stream": True,
        "sequential_image_generation": "auto",
        "sequential_image_generation_options": {"max_images": count},
        "simulator_fault": fault,
        **fields,
    }


class Events:
    """A stream as the caller read it: each event's raw text and arrival time, and the raw body."""

    def __init__(self) -> None:
        self.raw = b""
        self.items: list[tuple[str, float]] = []

    @property
    def names(self) -> list[str | None]:
        return [_field(raw, "event") for raw, _ in self.items]

    def data(self, index: int) -> Any:
        text = _field(self.items[index][0], "data")
        return None if text is None else json.loads(text)


def _field(raw: str, name: str) -> str | None:
    lines = [line for line in raw.split("\n") if line.startswith(name + ": ")]
    return lines[0].removeprefix(name + ": ") if lines else None


def read_stream(
    response: httpx.Response,
    events: Events,
    stop_after: int | None = None,
    on_first: Callable[[], None] | None = None,
) -> None:
    pending = b""
    for chunk in response.iter_raw():
        events.raw += chunk
        pending += chunk
        while b"\n\n" in pending:
            raw, pending = pending.split(b"\n\n", 1)
            events.items.append((raw.decode(), time.monotonic()))
            if on_first is not None and len(events.items) == 1:
                on_first()
            if stop_after is not None and len(events.items) >= stop_after:
                return
    assert pending == b"", pending


def stream(
    gateway: Gateway,
    key: str,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
    on_first: Callable[[], None] | None = None,
) -> tuple[httpx.Response, Events]:
    """One streamed call, read as ``read_stream`` does (``stop_after`` events: then the caller
    hangs up); a refusal's body is read whole."""
    events = Events()
    with httpx.Client(timeout=60, verify=TLS) as client:
        with client.stream(
            "POST",
            gateway.url + GENERATIONS,
            json=payload,
            headers={"Authorization": f"Bearer {key}", **(headers or {})},
        ) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                read_stream(response, events, stop_after, on_first)
            else:
                response.read()
    return response, events


def record_of(redis_url: str, key_id: str, request_id: str) -> dict[str, str]:
    def find() -> dict[str, str] | None:
        return next((r for r in ledger(redis_url, key_id) if r["request_id"] == request_id), None)

    return dict(wait_until(find, what=f"the ledger record of {request_id}"))


@pytest.fixture
def team_key(gateway: Gateway) -> Iterator[tuple[str, str]]:
    yield gateway.create_key(budget_usd="100", budget_period="total")


# --- Events relayed, and charged per image --------------------------------------------------------


def test_a_stream_is_relayed_event_by_event_and_charged_per_image(
    gateway: Gateway, redis_server: RedisServer, team_key: tuple[str, str]
) -> None:
    key, key_id = team_key
    response, events = stream(gateway, key, set_of(3, size="64x48"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events.names == [SUCCEEDED, SUCCEEDED, SUCCEEDED, COMPLETED, None]
    assert events.raw.startswith(b'event: image_generation.partial_succeeded\ndata: {"type":')
    assert events.raw.endswith(b"}\n\ndata: [DONE]\n\n")
    first = events.data(0)
    assert list(first) == ["type", "model", "created", "image_index", "url", "size"]  # not re-encoded
    assert events.data(3)["usage"]["generated_images"] == 3
    record = record_of(redis_server.url, key_id, response.headers["x-request-id"])
    assert (record["images"], record["upstream_images"], record["stream"]) == ("3", "3", "1")
    assert (record["reconcile"], record["client_left"], record["outcome"]) == ("0", "0", "ok")
    assert spent(gateway, key_id) == 3 * PRICE and reserved(gateway, key_id) == 0
    line = access_line(gateway, response.headers["x-request-id"])
    assert line["status"] == 200 and line["images"] == 3 and line["stream"] is True


def access_line(gateway: Gateway, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for text in gateway.log().splitlines():
            if request_id in text and '"latency_ms"' in text:
                return dict(json.loads(text[text.index("{") :]))
        return None

    return dict(wait_until(find, what="the access-log line"))


def test_each_event_arrives_as_soon_as_it_is_made(gateway: Gateway, team_key: tuple[str, str]) -> None:
    key, _ = team_key
    _, events = stream(gateway, key, set_of(3, "stream_gap=0.4"))
    arrivals = [at for _, at in events.items]
    assert len(arrivals) == 5
    assert arrivals[2] - arrivals[0] >= 0.6, "the events were held back and sent together"


def test_failed_images_cost_nothing(
    gateway: Gateway, redis_server: RedisServer, team_key: tuple[str, str]
) -> None:
    key, key_id = team_key
    response, events = stream(gateway, key, set_of(3, "stream_gap=0,fail_images=1"))
    assert events.names == [SUCCEEDED, FAILED, SUCCEEDED, COMPLETED, None]
    record = record_of(redis_server.url, key_id, response.headers["x-request-id"])
    assert (record["images"], record["upstream_images"], record["reconcile"]) == ("2", "2", "0")
    assert spent(gateway, key_id) == 2 * PRICE
    response, events = stream(gateway, key, set_of(2, "stream_gap=0,fail_images=all"))
    assert events.names == [FAILED, FAILED, COMPLETED, None]
    assert spent(gateway, key_id) == 2 * PRICE


def test_a_usage_that_disagrees_is_flagged(
    gateway: Gateway, redis_server: RedisServer, team_key: tuple[str, str]
) -> None:
    key, key_id = team_key
    response, _ = stream(gateway, key, set_of(2, "stream_gap=0,usage_images=7"))
    record = record_of(redis_server.url, key_id, response.headers["x-request-id"])
    assert (record["images"], record["upstream_images"], record["reconcile"]) == ("2", "7", "1")
    assert spent(gateway, key_id) == 2 * PRICE


# --- Refusals come before the stream, as JSON -------------------------------------------------------


def test_refusals_before_the_stream_are_the_usual_json(
    gateway: Gateway, simulator: Simulator, team_key: tuple[str, str]
) -> None:
    key, key_id = team_key
    before = simulator.count()
    response, _ = stream(gateway, "sk-not-a-key", set_of(2))
    assert_envelope(response, 401, "invalid_api_key", False)
    response, _ = stream(gateway, key, set_of(2, stream="yes"))
    assert_envelope(response, 400, None, False)
    assert response.json()["error"]["param"] == "stream"
    response, _ = stream(gateway, key, set_of(2, model="no-such-model"))
    assert response.status_code == 404
    poor, _ = gateway.create_key(budget_usd="0.2", budget_period="total")
    response, _ = stream(gateway, poor, set_of(2))  # the set's maximum is reserved: 2 images
    assert_envelope(response, 429, "insufficient_quota", False)
    response, _ = stream(gateway, key, set_of(2), {"Idempotency-Key": "k-stream-1"})
    assert_envelope(response, 400, None, False)
    assert simulator.count() == before, "a refused stream reached the upstream"
    assert spent(gateway, key_id) == 0


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("status=500", 502, "upstream_error"),
        ("status=401", 502, "upstream_auth_failed"),
        ("code=OutputImageSensitiveContentDetected", 400, "OutputImageSensitiveContentDetected"),
        ("drop=1", 502, "upstream_unavailable"),
        ("garbage=1", 502, "upstream_bad_response"),
    ],
)
def test_an_upstream_refusal_before_the_first_event_maps_as_without_streaming(
    gateway: Gateway, team_key: tuple[str, str], fault: str, status: int, code: str
) -> None:
    key, key_id = team_key
    response, _ = stream(gateway, key, set_of(2, fault))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    plain = httpx.post(
        gateway.url + GENERATIONS,
        json={k: v for k, v in set_of(2, fault).items() if k != "stream"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        verify=TLS,
    )
    assert (plain.status_code, plain.json()["error"]["code"]) == (status, code)
    assert spent(gateway, key_id) == 0 and reserved(gateway, key_id) == 0


# --- Streams that break or stall ----------------------------------------------------------------------


def test_a_broken_stream_ends_with_an_error_event_and_charges_what_was_delivered(
    gateway: Gateway, redis_server: RedisServer, team_key: tuple[str, str]
) -> None:
    key, key_id = team_key
    response, events = stream(gateway, key, set_of(3, "stream_gap=0,break_after=2"))
    assert events.names == [SUCCEEDED, SUCCEEDED, "error"]
    error = events.data(2)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_stream_broken"
    record = record_of(redis_server.url, key_id, response.headers["x-request-id"])
    assert (record["images"], record["reconcile"], record["outcome"]) == ("2", "1", "stream_broken")
    assert spent(gateway, key_id) == 2 * PRICE and reserved(gateway, key_id) == 0


def test_a_stalled_stream_ends_after_the_idle_timeout(
    redis_server: RedisServer, simulator: Simulator, gateway_factory
) -> None:
    gateway = gateway_factory(redis_server.url, simulator.url, GATEWAY_UPSTREAM_STREAM_IDLE_TIMEOUT_S="1")
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    started = time.monotonic()
    response, events = stream(gateway, key, set_of(3, "stream_gap=0,stall_after=1,stall=60"))
    assert time.monotonic() - started < 20
    assert events.names == [SUCCEEDED, "error"]
    assert events.data(1)["error"]["code"] == "upstream_stream_stalled"
    record = record_of(redis_server.url, key_id, response.headers["x-request-id"])
    assert (record["images"], record["reconcile"], record["outcome"]) == ("1", "1", "stream_stalled")
    assert spent(gateway, key_id) == PRICE
    text = gateway.metrics()
    assert metric_value(text, "gateway_upstream_errors_total", reason="stream_stalled") == 1
    assert metric_value(text, "gateway_requests_total", status="200") == 1  # counted like any call


# --- A caller who hangs up -----------------------------------------------------------------------------


def test_a_caller_who_hangs_up_is_charged_every_image_made(
    gateway: Gateway, redis_server: RedisServer, team_key: tuple[str, str]
) -> None:
    key, key_id = team_key
    response, events = stream(gateway, key, set_of(4, "stream_gap=0.3"), stop_after=1)
    assert events.names == [SUCCEEDED]
    record = record_of(redis_server.url, key_id, response.headers["x-request-id"])
    assert (record["images"], record["client_left"], record["outcome"]) == ("4", "1", "ok")
    assert spent(gateway, key_id) == 4 * PRICE and reserved(gateway, key_id) == 0


# --- Many streams, one budget ----------------------------------------------------------------------------


def test_twenty_streams_at_once_never_spend_past_the_budget(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    key, key_id = gateway.create_key(budget_usd=str(3 * PRICE), budget_period="total")

    async def one(client: httpx.AsyncClient) -> tuple[int, bytes]:
        payload = {"model": MODEL, "prompt": "many", "stream": True, "simulator_fault": "delay=0.5"}
        async with client.stream(
            "POST", gateway.url + GENERATIONS, json=payload, headers={"Authorization": f"Bearer {key}"}
        ) as response:
            return response.status_code, await response.aread()

    async def run() -> list[tuple[int, bytes]]:
        async with httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=20), verify=TLS
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(20)))

    results = asyncio.run(run())
    assert sorted(status for status, _ in results) == [200] * 3 + [429] * 17
    assert all(body.endswith(b"data: [DONE]\n\n") for status, body in results if status == 200)
    assert spent(gateway, key_id) == 3 * PRICE and reserved(gateway, key_id) == 0
    assert len(ledger(redis_server.url, key_id)) == 3


# --- SIGTERM ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("drain_s", ["0", "1"])
def test_sigterm_lets_a_stream_in_flight_finish(
    redis_server: RedisServer, simulator: Simulator, gateway_factory, drain_s: str
) -> None:
    gateway = gateway_factory(redis_server.url, simulator.url, GATEWAY_DRAIN_S=drain_s)
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    assert gateway.process is not None
    terminate = lambda: gateway.process.send_signal(signal.SIGTERM)  # noqa: E731
    _, events = stream(gateway, key, set_of(4, "stream_gap=0.4"), on_first=terminate)
    assert events.names == [SUCCEEDED] * 4 + [COMPLETED, None]
    assert gateway.process.wait(30) == 0
    records = ledger(redis_server.url, key_id)
    assert [(r["images"], r["stream"]) for r in records] == [("4", "1")]
    assert sum(Decimal(r["charge_micros"]) for r in records) == 4 * PRICE * 1_000_000


def test_sigterm_after_the_caller_left_still_reads_the_stream_to_its_end_and_charges_it(
    redis_server: RedisServer, simulator: Simulator, gateway_factory
) -> None:
    gateway = gateway_factory(redis_server.url, simulator.url)
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    assert gateway.process is not None
    stream(gateway, key, set_of(4, "stream_gap=0.4"), stop_after=1)
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(30) == 0
    records = ledger(redis_server.url, key_id)
    assert [(r["images"], r["client_left"], r["outcome"]) for r in records] == [("4", "1", "ok")]


# --- The official SDK ---------------------------------------------------------------------------------------


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai_sdk(gateway.url, key, max_retries=0)


def sdk_set_of_three(client: openai.OpenAI, fault: str) -> Any:
    """The SDK's stream of a set of at most three images, the simulator told ``fault``."""
    return client.images.generate(
        model=MODEL,
        prompt="a red fox",
        stream=True,
        extra_body={
            "sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 3},
            "simulator_fault": fault,
        },
    )


def test_the_openai_sdk_iterates_the_stream(gateway: Gateway, team_key: tuple[str, str]) -> None:
    key, key_id = team_key
    kinds = [event.type for event in sdk_set_of_three(sdk(gateway, key), "stream_gap=0")]
    assert kinds == [SUCCEEDED, SUCCEEDED, SUCCEEDED, COMPLETED]
    wait_until(lambda: spent(gateway, key_id) == 3 * PRICE, what="the charge")


def test_the_openai_sdk_raises_on_a_failed_image_and_on_a_broken_stream(
    gateway: Gateway, team_key: tuple[str, str]
) -> None:
    key, key_id = team_key
    client = sdk(gateway, key)
    for fault, seen_before in (("stream_gap=0,fail_images=1", 1), ("stream_gap=0,break_after=2", 2)):
        seen: list[str] = []
        with pytest.raises(openai.APIError):
            for event in sdk_set_of_three(client, fault):
                seen.append(event.type)
        assert seen == [SUCCEEDED] * seen_before
    with pytest.raises(openai.RateLimitError):  # a refusal before the stream is the usual exception
        poor, _ = gateway.create_key(budget_usd="0.2", budget_period="total")
        sdk(gateway, poor).images.generate(
            model=MODEL, prompt="x", stream=True, extra_body={"sequential_image_generation": "auto"}
        )


# --- Byte for byte, from an upstream whose bytes are fixed -------------------------------------------------

ODD_EVENTS = [  # spacing, key order, non-ASCII and an echoed master key, as no encoder would redo them
    b'event: image_generation.partial_succeeded\ndata: {"type":"image_generation.partial_succeeded",'
    b'  "image_index": 0, "url": "https://img.example/0.png?sig=' + UPSTREAM_KEY.encode() + b'",'
    b' "note": "\xe9\x9b\xaa"}\n\n',
    b'event: image_generation.completed\ndata: {"usage": {"generated_images": 1},'
    b' "type": "image_generation.completed"}\n\n',
    b"data: [DONE]\n\n",
]


class FixedStream(BaseHTTPRequestHandler):
    """An upstream that answers every POST with ODD_EVENTS, one chunk per event."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in ODD_EVENTS:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, *args: Any) -> None:
        pass


def test_events_reach_the_caller_byte_for_byte_with_the_master_key_masked(
    redis_server: RedisServer, gateway_factory
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FixedStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        upstream = f"http://127.0.0.1:{server.server_address[1]}"
        gateway = gateway_factory(redis_server.url, upstream)
        key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
        response, events = stream(gateway, key, set_of(1))
    finally:
        server.shutdown()
        server.server_close()
    expected = b"".join(ODD_EVENTS).replace(UPSTREAM_KEY.encode(), b"***")
    assert events.raw == expected
    assert UPSTREAM_KEY.encode() not in events.raw
    record = record_of(redis_server.url, key_id, response.headers["x-request-id"])
    assert (record["images"], record["upstream_images"], record["reconcile"]) == ("1", "1", "0")
