"""Resting channels: after failures in a row a channel gets no calls, then one live call tests it.

Two gateway replicas share one Redis (a Redis of this module's own: the rest state is the
store's) and the channels ``first`` (priority 1) and ``spare`` (priority 2), stand-in upstreams
over real HTTP counting the calls they receive. GATEWAY_CHANNEL_FAILURES is 3, the cooldown 2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.channel_upstreams import (
    StandIn,
    after,
    channel,
    channel_gateway,
    channel_states,
    envelope,
    images,
    wait_for_state,
)
from tests.support import MODEL, TLS, Gateway, RedisServer, agenerate, generate, metric_value, ready_together

COOLDOWN_S = 2.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("rest-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def first() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spare() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(
    store: RedisServer, first: StandIn, spare: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gateway]]:
    channels = [channel("first", first, priority=1), channel("spare", spare, priority=2)]
    upstreams = {"first": first, "spare": spare}
    directory = tmp_path_factory.mktemp("rest")
    env = {"GATEWAY_CHANNEL_COOLDOWN_S": str(COOLDOWN_S), "GATEWAY_CHANNEL_FAILURES": "3"}
    with (
        channel_gateway(store.url, directory / "r1", channels, upstreams, wait=False, **env) as r1,
        channel_gateway(store.url, directory / "r2", channels, upstreams, wait=False, **env) as r2,
    ):
        ready_together(r1, r2)
        yield [r1, r2]


@pytest.fixture(autouse=True)
def fresh(replicas: list[Gateway], store: RedisServer, first: StandIn, spare: StandIn) -> None:
    """Each test starts with both channels ready everywhere, no failure counted, answering images."""
    first.reset(images(1, "first"))
    spare.reset(images(1, "spare"))
    for gw in replicas:
        for name, upstream in (("first", first), ("spare", spare)):
            # A rest another replica lifted in Redis ends here at the next refresh, straight to
            # ready: only a rest that ends on probation needs its live call.
            settled = wait_for_state(gw, name, ("probation", "ready"), timeout_s=COOLDOWN_S + 10)
            if settled["state"] == "probation":
                # Its live call succeeds and it rejoins; spare is reached only when first refuses.
                first.answer = envelope(503) if upstream is spare else images(1, "first")
                generate(gw, _key(gw), model=MODEL)
                wait_for_state(gw, name, "ready")
        first.answer = images(1, "first")
        call(gw)  # a success on first: the failures in a row a test left are cleared
    first.reset(images(1, "first"))
    spare.reset(images(1, "spare"))


_KEYS: dict[str, str] = {}


def _key(gw: Gateway) -> str:
    if gw.url not in _KEYS:
        _KEYS[gw.url] = gw.create_key(team="rest-tests")[0]
    return _KEYS[gw.url]


def call(gw: Gateway) -> httpx.Response:
    response = generate(gw, _key(gw))
    assert response.status_code == 200, response.text
    return response


async def _at_once(calls: list[Gateway]) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        timeout=30, verify=TLS, limits=httpx.Limits(max_connections=len(calls))
    ) as client:
        return await asyncio.gather(*(agenerate(client, _key(gw), gw) for gw in calls))


def test_a_channel_failing_in_a_row_rests_then_one_live_call_tests_it_and_it_rejoins(
    replicas: list[Gateway], first: StandIn, spare: StandIn
) -> None:
    r1 = replicas[0]
    first.answer = envelope(500)
    for _ in range(3):
        assert "spare" in call(r1).json()["data"][0]["url"]
    resting = channel_states(r1)["first"]
    assert (resting["state"], resting["reason"]) == ("resting", "5xx"), "rested at once where it failed"
    assert 0 < resting["rest_left_s"] <= COOLDOWN_S
    for _ in range(4):
        call(r1)
    assert (first.calls, spare.calls) == (3, 7), "no call reaches a resting channel"

    first.answer = after(1.0, images(1, "first"))  # it works again, slowly
    wait_for_state(r1, "first", "probation")
    responses = asyncio.run(_at_once([r1] * 6))
    assert all(r.status_code == 200 for r in responses)
    assert first.calls == 4, "exactly one live call tests it"
    assert sorted("first" in r.json()["data"][0]["url"] for r in responses) == [False] * 5 + [True]
    wait_for_state(r1, "first", "ready")
    assert "first" in call(r1).json()["data"][0]["url"], "it rejoined: the calls go to it again"


def test_failures_count_only_in_a_row(replicas: list[Gateway], first: StandIn) -> None:
    r1 = replicas[0]
    for answer in (envelope(502), envelope(502), images(1), envelope(502), envelope(502)):
        first.answer = answer
        call(r1)
    assert channel_states(r1)["first"]["state"] == "ready", "a success in between starts the count again"


def test_a_channel_failing_its_live_call_rests_again_at_once(replicas: list[Gateway], first: StandIn) -> None:
    r1 = replicas[0]
    first.answer = envelope(503)
    for _ in range(3):
        call(r1)
    wait_for_state(r1, "first", "probation")
    call(r1)  # its live call fails: the call moves on to spare
    assert first.calls == 4
    assert channel_states(r1)["first"]["state"] == "resting"


def test_a_refused_key_or_balance_rests_the_channel_at_once(replicas: list[Gateway], first: StandIn) -> None:
    r1 = replicas[0]
    first.answer = envelope(402, "insufficient_balance")
    call(r1)
    state = channel_states(r1)["first"]
    assert (state["state"], state["reason"]) == ("resting", "insufficient_balance")
    call(r1)
    assert first.calls == 1


def test_an_upstream_429_rests_the_channel_for_its_retry_after(
    replicas: list[Gateway], first: StandIn
) -> None:
    """Retry-After 5 s, the cooldown 2 s: the rest is the upstream's."""
    r1 = replicas[0]
    first.answer = envelope(429, "rate_limit_exceeded", headers={"Retry-After": "5"})
    call(r1)
    state = channel_states(r1)["first"]
    assert (state["state"], state["reason"]) == ("resting", "rate_limited")
    assert COOLDOWN_S + 0.5 < state["rest_left_s"] <= 5
    call(r1)
    assert first.calls == 1
    first.answer = images(1, "first")
    wait_for_state(r1, "first", "probation", timeout_s=15)
    assert "first" in call(r1).json()["data"][0]["url"]


def test_two_replicas_share_the_rest_and_the_count_of_failures_in_a_row(
    replicas: list[Gateway], first: StandIn, spare: StandIn
) -> None:
    r1, r2 = replicas
    first.answer = envelope(500)
    call(r1)
    call(r1)
    call(r2)  # the third failure in a row, counted across the replicas
    for gw in replicas:
        assert wait_for_state(gw, "first", "resting")["reason"] == "5xx"
    for gw in (r1, r2, r1, r2):
        call(gw)
    assert first.calls == 3, "neither replica sends a call to a channel another rested"

    first.answer = after(1.0, images(1, "first"))
    for gw in replicas:
        wait_for_state(gw, "first", "probation")
    responses = asyncio.run(_at_once([r1, r2] * 4))
    assert all(r.status_code == 200 for r in responses)
    assert first.calls == 4, "one live call across the cluster"
    for gw in replicas:
        wait_for_state(gw, "first", "ready")


def test_when_every_channel_rests_calls_still_reach_them_and_the_gauges_say_so(
    replicas: list[Gateway], first: StandIn, spare: StandIn
) -> None:
    """A gateway of one channel keeps calling it, as it always did; ops are told every channel rests."""
    r1 = replicas[0]
    first.answer, spare.answer = envelope(500), envelope(500)
    for _ in range(3):
        assert generate(r1, _key(r1)).status_code == 502
    assert {s["state"] for s in channel_states(r1).values()} == {"resting"}
    page = r1.metrics()
    assert metric_value(page, "gateway_model_channels_available", model=MODEL) == 0
    assert metric_value(page, "gateway_channel_resting", channel="first") == 1
    assert metric_value(page, "gateway_channel_resting", channel="spare") == 1
    first.answer = images(1, "first")
    assert "first" in call(r1).json()["data"][0]["url"], "the last resort still serves"
    assert first.calls == 4


def test_weights_share_the_calls_of_one_priority(
    store: RedisServer, tmp_path: Path, first: StandIn, spare: StandIn
) -> None:
    """heavy (weight 3) and light (weight 1) at priority 1: 400 calls, heavy's share 3/4 within
    five standard deviations (about 0.11); the priority-2 backup gets none."""
    heavy, light, backup = StandIn().start(), StandIn().start(), first
    try:
        for upstream in (heavy, light):
            upstream.reset(images(1))
        channels = [
            channel("heavy", heavy, weight=3),
            channel("light", light, weight=1),
            channel("backup", backup, priority=2),
        ]
        with channel_gateway(
            store.url, tmp_path, channels, {"heavy": heavy, "light": light, "backup": backup}
        ) as gw:
            key = gw.create_key(team="weights")[0]

            async def many() -> list[httpx.Response]:
                limits = httpx.Limits(max_connections=16)
                async with httpx.AsyncClient(timeout=30, verify=TLS, limits=limits) as client:
                    sem = asyncio.Semaphore(16)

                    async def one() -> httpx.Response:
                        async with sem:
                            return await agenerate(client, key, gw)

                    return await asyncio.gather(*(one() for _ in range(400)))

            assert all(r.status_code == 200 for r in asyncio.run(many()))
        assert heavy.calls + light.calls == 400 and backup.calls == 0
        assert 300 - 44 <= heavy.calls <= 300 + 44, (heavy.calls, light.calls)
    finally:
        heavy.stop()
        light.stop()
