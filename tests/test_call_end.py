"""However a call ends, it ends one way: answered, counted, access-logged, holding nothing.

A fault of the gateway's own (an unexpected exception in the call path) is provoked through a
real gateway process: started with ``GATEWAY_TEST_FAULT_MARKER``, it raises once the upstream has
answered a call whose body holds the marker, before that call settles (gateway/call/
injected_fault.py; no honest input reaches such a fault, or it would be a defect to fix).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from tests.scripted_upstream import ScriptedUpstream, answer_json, gateway_of, ledger_record
from tests.support import (
    GENERATIONS,
    MODEL,
    Gateway,
    RedisServer,
    generate,
    metric_value,
    the_line,
    wait_until,
)

MARKER = "fault-" + secrets.token_hex(6)


@pytest.fixture(scope="module")
def gw(
    redis_server: RedisServer, upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("call-end")
    env = {"GATEWAY_TEST_FAULT_MARKER": MARKER}
    with gateway_of(redis_server.url, upstream_server, directory, **env) as gateway:
        yield gateway


def requests_with(gw: Gateway, team: str, status: str) -> float:
    return metric_value(gw.metrics(), "gateway_requests_total", model=MODEL, team=team, status=status)


@pytest.mark.parametrize("images", [1, 3], ids=["buffered-answer", "relayed-answer-over-1-mib"])
def test_a_fault_in_the_gateway_is_a_counted_logged_500_that_holds_nothing(
    gw: Gateway, upstream: ScriptedUpstream, images: int
) -> None:
    """Answered with the OpenAI envelope when nothing was sent yet; a relayed answer, already
    under way, has its connection cut instead (never finished with a made-up end)."""
    upstream.answer = answer_json(200, {"created": 1, "data": [{"b64_json": "A" * 512 * 1024}] * images})
    team = f"end-{secrets.token_hex(3)}"
    key, key_id = gw.create_key(team=team, budget_usd="10")
    before = requests_with(gw, team, "500")

    sent = {"Authorization": f"Bearer {key}"}
    payload = {"model": MODEL, "prompt": f"a cat {MARKER}", "n": images}
    with httpx.stream("POST", gw.url + GENERATIONS, headers=sent, json=payload, timeout=30) as response:
        request_id = response.headers["x-request-id"]
        if images == 1:
            assert response.status_code == 500
            error = json.loads(response.read())["error"]
            assert (error["type"], error["code"]) == ("server_error", "internal_error") and error["message"]
            # The upstream had answered: an SDK's retry could be billed again, so none is asked for.
            assert response.headers["x-should-retry"] == "false"
            assert "may already have" in error["message"]
        else:
            assert response.status_code == 200  # under way when the fault came: the body is cut
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
    assert len(upstream.seen_authorization) == 1  # the upstream did answer: the fault came after

    line = the_line(gw, response)
    assert (line["request_id"], line["key_id"], line["team"]) == (request_id, key_id, team)
    assert line["status"] == 500
    assert line["error"] == "InjectedFault"
    assert f"request {request_id} failed in the gateway" in gw.log()  # with its traceback, for ops
    wait_until(lambda: requests_with(gw, team, "500") == before + 1, what="the 500 counted")

    usage = gw.usage(key_id)  # the key holds nothing: no call in flight, nothing reserved or spent
    assert (usage["inflight"], usage["reserved_usd"], usage["spent_usd"]) == (0, "0.000000", "0.000000")
    record = ledger_record(gw, request_id)
    assert (record["outcome"], record["images"], record["charge_micros"], record["reconcile"]) == (
        "internal_error",
        0,
        0,
        1,  # the upstream answered, and may bill: reconciled
    )
    assert metric_value(gw.metrics(), "gateway_inflight_requests") == 0  # the admission slot is free

    ok = generate(gw, key, n=images)  # the key, and the upstream's connections, still work
    assert ok.status_code == 200 and len(ok.json()["data"]) == images


def test_a_fault_while_a_stream_settles_still_ends_the_call_holding_nothing(
    gw: Gateway, upstream: ScriptedUpstream
) -> None:
    """The events were relayed whole; the fault came as the call settled: the call is counted as
    a 500 and logged, and its reservation released with no charge, for reconciliation."""
    image = {"type": "image_generation.partial_succeeded", "image_index": 0, "url": "https://x.invalid/0.png"}
    done = {"type": "image_generation.completed", "usage": {"generated_images": 1}}
    events = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in (image, done))
    upstream.answer = lambda request, body: web.Response(
        body=events + b"data: [DONE]\n\n", content_type="text/event-stream"
    )
    team = f"end-{secrets.token_hex(3)}"
    key, key_id = gw.create_key(team=team, budget_usd="10")
    before = requests_with(gw, team, "500")

    response = generate(gw, key, prompt=f"a cat {MARKER}", stream=True)

    assert response.status_code == 200 and b"partial_succeeded" in response.content
    line = the_line(gw, response)
    assert (line["status"], line["error"], line["stream"]) == (500, "InjectedFault", True)
    wait_until(lambda: requests_with(gw, team, "500") == before + 1, what="the 500 counted")
    usage = gw.usage(key_id)
    assert (usage["inflight"], usage["reserved_usd"], usage["spent_usd"]) == (0, "0.000000", "0.000000")
    record = ledger_record(gw, response.headers["x-request-id"])
    assert (record["outcome"], record["charge_micros"], record["reconcile"]) == ("internal_error", 0, 1)
