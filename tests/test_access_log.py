"""The access log: one JSON line per request on stdout, what ops needs, never a secret or a prompt."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tests.support import (
    ADMIN_TOKEN,
    MODEL,
    UPSTREAM_KEY,
    Gateway,
    RedisServer,
    Simulator,
    generate,
    the_line,
    wait_until,
)

PROMPT = "一只在雪地里奔跑的柴犬, private detail "


def test_a_call_logs_one_line_with_what_ops_needs(gateway: Gateway) -> None:
    team = f"log-{secrets.token_hex(3)}"
    key, key_id = gateway.create_key(team=team)
    prompt = PROMPT + secrets.token_hex(4)
    response = generate(gateway, key, prompt=prompt, n=2)
    assert response.status_code == 200
    line = the_line(gateway, response)
    assert line["request_id"] == response.headers["x-request-id"]
    assert (line["team"], line["key_id"], line["model"], line["n"], line["images"]) == (
        team,
        key_id,
        MODEL,
        2,
        2,
    )
    assert line["cost_usd"] == response.headers["x-gateway-cost-usd"] == "0.270000"
    assert (line["status"], line["upstream_status"], line["upstream_outcome"]) == (200, 200, "ok")
    assert line["rejection"] is None
    assert line["latency_ms"] >= line["upstream_latency_ms"] >= 0
    assert "prompt" not in line
    assert prompt not in gateway.log() and "private detail" not in gateway.log()


def test_failures_and_refusals_log_one_line_each_saying_why(gateway: Gateway) -> None:
    team = f"log-{secrets.token_hex(3)}"
    key, key_id = gateway.create_key(team=team)
    broke, _ = gateway.create_key(team=team, budget_usd="0", budget_period="total")
    cases = [
        (key, {"simulator_fault": "status=401"}, 502, {"upstream_status": 401, "upstream_outcome": "auth"}),
        (key, {"simulator_fault": "status=500"}, 502, {"upstream_status": 500, "upstream_outcome": "5xx"}),
        (key, {"simulator_fault": "images=0", "n": 2}, 200, {"images": 0, "cost_usd": "0.000000"}),
        (key, {"n": 11}, 400, {"rejection": "bad_request", "team": team, "upstream_status": None}),
        (broke, {}, 429, {"rejection": "budget_exceeded", "team": team, "upstream_outcome": None}),
        ("sk-gw-aaaaaaaaaaaa_" + "z" * 43, {}, 401, {"rejection": "invalid_key", "team": "unknown"}),
    ]
    for token, extra, status, expected in cases:
        response = generate(gateway, token, prompt=PROMPT, **extra)
        assert response.status_code == status, response.text
        line = the_line(gateway, response)
        assert line["status"] == status
        assert {k: line[k] for k in expected} == expected, line
        assert line["latency_ms"] > 0
        assert (line["upstream_latency_ms"] is None) == (line["upstream_outcome"] is None)
        assert "prompt" not in line


def test_no_secret_ever_reaches_the_log(gateway: Gateway) -> None:
    key, _ = gateway.create_key(team="log-secrets")
    responses = [
        generate(gateway, key, prompt=PROMPT),
        generate(gateway, key, prompt=PROMPT, simulator_fault="status=401"),
        generate(gateway, UPSTREAM_KEY, prompt=PROMPT),  # the master key, misused
        generate(gateway, ADMIN_TOKEN, prompt=PROMPT),
        generate(gateway, key + "x", prompt=PROMPT),  # a typo in a real key
    ]
    assert [r.status_code for r in responses] == [200, 502, 401, 401, 401]
    for response in responses:
        the_line(gateway, response)
    log = gateway.log()
    # The secret is everything after the key id's "_": it may hold "_" itself (base64url), so
    # splitting at the last one could leave a single common letter, found in any log.
    secret_part = key.partition("_")[2]
    assert len(secret_part) >= 40
    for secret in (key, secret_part, UPSTREAM_KEY, ADMIN_TOKEN, PROMPT, "雪地"):
        assert secret not in log


def test_prompts_are_logged_only_when_asked(
    redis_server: RedisServer, simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    gw = gateway_factory(redis_server.url, simulator.url, GATEWAY_LOG_PROMPTS="true")
    key, _ = gw.create_key(team="log-prompts")
    prompt = PROMPT + secrets.token_hex(4)
    ok = generate(gw, key, prompt=prompt)
    refused = generate(gw, key, prompt=prompt, n=11)
    assert the_line(gw, ok)["prompt"] == prompt
    assert the_line(gw, refused)["prompt"] is None, "an invalid body is not echoed into the log"
    for secret in (key, UPSTREAM_KEY, ADMIN_TOKEN):
        assert secret not in gw.log()


def test_upstream_calls_add_no_log_lines_of_their_own(gateway: Gateway) -> None:
    """One line per call: the HTTP client's own INFO line per upstream request is not logged."""
    key, _ = gateway.create_key()
    response = generate(gateway, key, prompt=PROMPT)
    assert response.status_code == 200
    the_line(gateway, response)
    loggers = {json.loads(line).get("logger") for line in gateway.log().splitlines() if line.startswith("{")}
    assert not loggers & {"httpx", "httpcore"}, loggers


def test_replayed_and_concurrency_refused_lines_name_the_key(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(max_concurrent=1)
    headers = {"Idempotency-Key": f"log-{secrets.token_hex(3)}"}
    first = generate(gateway, key, headers=headers)
    replay = generate(gateway, key, headers=headers)
    assert replay.headers["x-idempotent-replayed"] == "true"
    line = the_line(gateway, replay)
    assert (line["key_id"], line["idempotent_replay"], line["cost_usd"]) == (key_id, True, "0.000000")
    assert the_line(gateway, first)["key_id"] == key_id

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(generate, gateway, key, simulator_fault="delay=3")
        wait_until(
            lambda: gateway.usage(key_id)["inflight"] == 1, timeout_s=10, what="the slow call in flight"
        )
        refused = generate(gateway, key, prompt="x")
        assert slow.result().status_code == 200
    assert refused.status_code == 429
    line = the_line(gateway, refused)
    assert (line["key_id"], line["rejection"]) == (key_id, "concurrency_exceeded")
