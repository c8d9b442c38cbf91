"""Several upstream channels: which one a call goes to, and when it may move on to the next.

Stand-in upstreams over real HTTP (tests/channel_upstreams.py), each counting the calls it
received, behind a real gateway with a channels file: ``down`` (nothing listens, priority 0, only
for Seedream 4.0), ``tls`` (https to a plain-HTTP server: its handshake fails; priority 0, only for
Seedream 5.0), ``alpha`` (priority 1) and ``beta`` (priority 2, its own name for the model).
A call moves on only after an attempt that cannot have produced a billable image, and the money
follows: one reservation and one settlement per call, a record for each attempt that reached an
upstream, charged only for the one that delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tests.channel_upstreams import (
    StandIn,
    after,
    channel,
    channel_gateway,
    channel_states,
    dropped,
    envelope,
    event_stream,
    html,
    images,
    refused_port,
)
from tests.fault_tools import PRICE, assert_envelope, reserved, spent
from tests.scripted_upstream import answer_json
from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    Gateway,
    RedisServer,
    generate,
    metric_value,
    openai_sdk,
    wait_until,
)

SEEDREAM_40 = "doubao-seedream-4-0-250828"
SEEDREAM_50 = "doubao-seedream-5-0-260128"
BETA_MODEL = "beta-seedream-4-5"
TIMEOUT_S = 2


@pytest.fixture(scope="module")
def alpha() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def beta() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(
    redis_server: RedisServer, alpha: StandIn, beta: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A short cooldown: a channel a test rested is back on probation for the next test."""
    down = refused_port()
    not_tls = alpha.url.replace("http://", "https://")  # alpha speaks plain HTTP: the handshake fails
    channels = [
        channel("down", down, priority=0, models=[SEEDREAM_40]),
        channel("tls", not_tls, priority=0, models=[SEEDREAM_50]),
        channel("alpha", alpha, priority=1),
        channel("beta", beta, priority=2, model_map={MODEL: BETA_MODEL}),
    ]
    upstreams = {"down": down, "tls": not_tls, "alpha": alpha, "beta": beta}
    with channel_gateway(
        redis_server.url,
        tmp_path_factory.mktemp("channels"),
        channels,
        upstreams,
        GATEWAY_UPSTREAM_TIMEOUT_S=str(TIMEOUT_S),
        GATEWAY_CHANNEL_COOLDOWN_S="0.2",
    ) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def fresh(gw: Gateway, alpha: StandIn, beta: StandIn) -> None:
    """Each test scripts its own answers, and starts with no channel resting."""
    alpha.reset(images(1, "alpha"))
    beta.reset(images(1, "beta"))
    wait_until(
        lambda: all(c["state"] != "resting" for c in channel_states(gw).values()), what="no channel resting"
    )


def records_of(gw: Gateway, request_id: str) -> list[dict[str, Any]]:
    """The ledger's records of one call, in order, as the admin export gives them."""
    today = datetime.now(UTC).date()
    days = {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}
    with gw.admin() as admin:
        lines = admin.get("/admin/v1/usage", params={**days, "format": "jsonl"}).text
    return [r for r in map(orjson.loads, lines.splitlines()) if r["request_id"] == request_id]


def calls_of(gw: Gateway, name: str, outcome: str) -> float:
    return metric_value(gw.metrics(), "gateway_channel_calls_total", channel=name, outcome=outcome)


def test_calls_go_to_the_lowest_priority_and_never_to_a_backup_while_it_serves(
    gw: Gateway, alpha: StandIn, beta: StandIn
) -> None:
    key, _ = gw.create_key(team="chan-order")
    for _ in range(5):
        response = generate(gw, key)
        assert response.status_code == 200, response.text
        assert "alpha" in response.json()["data"][0]["url"]
    assert (alpha.calls, beta.calls) == (5, 0)
    assert all(auth == f"Bearer {alpha.key}" for auth in alpha.seen_authorization), "its own key"


def test_a_refused_connection_moves_on_and_leaves_no_record(gw: Gateway, alpha: StandIn) -> None:
    key, key_id = gw.create_key(team="chan-refused", budget_usd="10", budget_period="total")
    before = calls_of(gw, "down", "connect")
    response = generate(gw, key, model=SEEDREAM_40)
    assert response.status_code == 200, response.text
    assert alpha.calls == 1
    (record,) = records_of(gw, response.headers["x-request-id"])
    assert (record["channel"], record["attempt"], record["outcome"], record["failed_over"]) == (
        "alpha",
        2,
        "ok",
        0,
    )
    assert record["charge_micros"] == record["cost_micros"] == 162_000
    assert calls_of(gw, "down", "connect") == before + 1
    page = gw.metrics()
    assert metric_value(page, "gateway_channel_upstream_duration_seconds_count", channel="alpha") >= 1
    assert (
        metric_value(gw.metrics(), "gateway_channel_failovers_total", channel="down", outcome="connect") >= 1
    )
    assert spent(gw, key_id) == Decimal("0.162") and reserved(gw, key_id) == 0


def test_a_failed_tls_handshake_moves_on_and_leaves_no_record(gw: Gateway, alpha: StandIn) -> None:
    key, _ = gw.create_key(team="chan-tls")
    before = calls_of(gw, "tls", "connect")
    response = generate(gw, key, model=SEEDREAM_50)
    assert response.status_code == 200, response.text
    assert alpha.calls == 1, (
        "the handshake's bytes never reached alpha's handler: only the call that moved on"
    )
    (record,) = records_of(gw, response.headers["x-request-id"])
    assert (record["channel"], record["attempt"]) == ("alpha", 2)
    assert calls_of(gw, "tls", "connect") == before + 1


REFUSALS = [
    # status, the outcome recorded, whether it rests the channel at once (its key or balance)
    (401, "auth"),
    (402, "insufficient_balance"),
    (403, "auth"),
    (429, "rate_limited"),
    (500, "5xx"),
    (502, "5xx"),
    (503, "5xx"),
    (504, "5xx"),
]


@pytest.mark.parametrize(("status", "outcome"), REFUSALS)
def test_a_refusal_that_bills_nothing_moves_on_and_the_call_is_charged_once(
    gw: Gateway, alpha: StandIn, beta: StandIn, status: int, outcome: str
) -> None:
    """The key's budget holds one image: one reservation covers every attempt of the call."""
    key, key_id = gw.create_key(team="chan-refusals", budget_usd=str(PRICE), budget_period="total")
    alpha.answer = envelope(status, headers={"Retry-After": "1"} if status == 429 else None)
    response = generate(gw, key)
    assert response.status_code == 200, response.text
    assert "beta" in response.json()["data"][0]["url"]
    assert (alpha.calls, beta.calls) == (1, 1)
    first, last = records_of(gw, response.headers["x-request-id"])
    assert (first["channel"], first["attempt"], first["failed_over"], first["outcome"]) == (
        "alpha",
        1,
        1,
        outcome,
    )
    assert (first["upstream_status"], first["charge_micros"], first["cost_micros"], first["reconcile"]) == (
        status,
        0,
        0,
        0,
    )
    assert (last["channel"], last["attempt"], last["failed_over"], last["outcome"]) == ("beta", 2, 0, "ok")
    assert last["charge_micros"] == MODEL_PRICE_MICROS and last["images"] == 1
    assert spent(gw, key_id) == PRICE and reserved(gw, key_id) == 0
    assert gw.usage(key_id)["inflight"] == 0


SENT_THEN_LOST = [
    # what alpha does, the caller's status and code, reconciled
    ("timeout", after(TIMEOUT_S + 3, images(1)), 504, "upstream_timeout", True),
    ("dropped", dropped(), 502, "upstream_unavailable", True),
    (
        "unreadable 200",
        answer_json(200, {"created": 1, "data": "not a list"}),
        502,
        "upstream_bad_response",
        True,
    ),
    ("proxy 502", html(502), 502, "upstream_error", True),
    ("proxy 504", html(504), 502, "upstream_error", True),
    ("content safety", envelope(400, "OutputImageSensitiveContentDetected"), 400, None, False),
]


@pytest.mark.parametrize(
    ("what", "answer", "status", "code", "reconcile"), SENT_THEN_LOST, ids=[c[0] for c in SENT_THEN_LOST]
)
def test_a_call_that_may_have_been_generated_never_moves_on(
    gw: Gateway,
    alpha: StandIn,
    beta: StandIn,
    what: str,
    answer: Any,
    status: int,
    code: str,
    reconcile: bool,
) -> None:
    key, key_id = gw.create_key(team="chan-no-second-call", budget_usd="10", budget_period="total")
    alpha.answer = answer
    response = generate(gw, key)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
    assert (alpha.calls, beta.calls) == (1, 0), "no second upstream call"
    (record,) = records_of(gw, response.headers["x-request-id"])
    assert (record["channel"], record["attempt"], record["failed_over"]) == ("alpha", 1, 0)
    assert (record["reconcile"], record["charge_micros"]) == (int(reconcile), 0)
    assert spent(gw, key_id) == 0 and reserved(gw, key_id) == 0


def test_a_stream_moves_on_before_its_first_event(gw: Gateway, alpha: StandIn, beta: StandIn) -> None:
    key, _ = gw.create_key(team="chan-stream")
    alpha.answer = envelope(503)
    beta.answer = event_stream(2, "beta")
    stream = openai_sdk(gw.url, key, max_retries=0).images.generate(
        model=MODEL, prompt="a stream", stream=True, extra_body={"sequential_image_generation": "auto"}
    )
    events = [event.type for event in stream]
    assert events.count("image_generation.partial_succeeded") == 2
    assert (alpha.calls, beta.calls) == (1, 1)
    request_ids = {r["request_id"] for r in _team_records(gw, "chan-stream")}
    (request_id,) = request_ids
    first, last = records_of(gw, request_id)
    assert (first["channel"], first["failed_over"], last["channel"], last["images"]) == (
        "alpha",
        1,
        "beta",
        2,
    )
    assert last["stream"] == 1 and last["charge_micros"] == 2 * MODEL_PRICE_MICROS


def _team_records(gw: Gateway, team: str) -> list[dict[str, Any]]:
    today = datetime.now(UTC).date()
    days = {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat(), "team": team}
    with gw.admin() as admin:
        return [orjson.loads(line) for line in admin.get("/admin/v1/usage", params=days).text.splitlines()]


def test_an_idempotency_key_covers_the_call_across_its_attempts(
    gw: Gateway, alpha: StandIn, beta: StandIn
) -> None:
    key, key_id = gw.create_key(team="chan-idem", budget_usd="10", budget_period="total")
    alpha.answer = envelope(500)
    headers = {"Idempotency-Key": "channels-" + key_id}
    first = generate(gw, key, headers=headers)
    again = generate(gw, key, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["x-idempotent-replayed"] == "true" and again.json() == first.json()
    assert (alpha.calls, beta.calls) == (1, 1)
    assert spent(gw, key_id) == PRICE


def test_a_channel_gets_its_own_name_of_the_model_and_the_body_otherwise_as_sent(
    gw: Gateway, alpha: StandIn, beta: StandIn
) -> None:
    key, _ = gw.create_key(team="chan-map")
    alpha.answer = envelope(502)
    sent = {"prompt": "一只在雪地里的红狐狸", "size": "2K", "seed": 7, "watermark": False}
    assert generate(gw, key, **sent).status_code == 200
    assert alpha.bodies[0] == {"model": MODEL, **sent}, "alpha has no name of its own for it"
    assert beta.bodies[0] == {"model": BETA_MODEL, **sent}


def test_every_channels_key_is_masked_in_what_any_channel_answers(
    gw: Gateway, alpha: StandIn, beta: StandIn
) -> None:
    key, _ = gw.create_key(team="chan-mask")
    echo = {
        "error": {"message": f"bad: {alpha.key} / {beta.key}", "type": "invalid_request_error", "code": "x"}
    }
    alpha.answer = answer_json(400, echo)
    response = generate(gw, key)
    assert response.status_code == 400
    assert alpha.key not in response.text and beta.key not in response.text
    assert response.json()["error"]["message"] == "bad: *** / ***"
    alpha.answer = answer_json(200, {"created": 1, "data": [{"url": f"https://x/{beta.key}.png"}]})
    assert beta.key not in generate(gw, key).text
    large = "A" * (2 * 1024 * 1024)  # over 1 MiB: relayed as it arrives, masked across its pieces
    alpha.answer = answer_json(200, {"created": 1, "data": [{"b64_json": large + beta.key + large}]})
    relayed = generate(gw, key)
    assert relayed.status_code == 200 and len(relayed.content) > 4 * 1024 * 1024
    assert beta.key not in relayed.text and "***" in relayed.text


def test_readiness_lists_each_channel_and_the_access_line_names_it(gw: Gateway, alpha: StandIn) -> None:
    states = channel_states(gw)
    assert set(states) == {"down", "tls", "alpha", "beta"}
    assert all(state["state"] in ("ready", "resting", "probation") for state in states.values())
    key, _ = gw.create_key(team="chan-log")
    alpha.answer = envelope(503)
    response = generate(gw, key)
    request_id = response.headers["x-request-id"]
    line = wait_until(lambda: _access_line(gw, request_id), what="the access line")
    assert (line["channel"], line["failovers"]) == ("beta", ["alpha:5xx"])


def _access_line(gw: Gateway, request_id: str) -> dict[str, Any] | None:
    for text in gw.log().splitlines():
        if text.startswith("{") and request_id in text:
            return dict(orjson.loads(text))
    return None


def test_a_priced_model_no_channel_serves_is_refused_before_anything_is_reserved(
    redis_server: RedisServer, alpha: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> None:
    channels = [channel("only40", alpha, models=[SEEDREAM_40])]
    with channel_gateway(
        redis_server.url, tmp_path_factory.mktemp("unserved"), channels, {"only40": alpha}
    ) as one:
        key, key_id = one.create_key(team="chan-unserved", budget_usd="1", budget_period="total")
        response = generate(one, key)
        assert_envelope(response, 503, "no_channel_available", retry=False)
        assert alpha.calls == 0 and records_of(one, response.headers["x-request-id"]) == []
        assert one.usage(key_id)["inflight"] == 0
        assert httpx.get(f"{one.url}/readyz").json()["channels"] == {"only40": {"state": "ready"}}
