"""Idempotency-Key: a repeat returns the first result without a second upstream call or charge."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tests.support import MODEL, MODEL_PRICE_MICROS, Gateway, Simulator, generate

PRICE = Decimal(MODEL_PRICE_MICROS) / 1_000_000


def test_repeat_returns_first_result_without_second_charge(
    gateway: Gateway, simulator: Simulator, openai_client
) -> None:
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    client = openai_client(key)
    before = simulator.count()
    first = client.images.generate(model=MODEL, prompt="once", extra_headers={"Idempotency-Key": "job-1"})
    again = client.images.generate(model=MODEL, prompt="once", extra_headers={"Idempotency-Key": "job-1"})
    assert again.data[0].url == first.data[0].url
    assert simulator.count() - before == 1
    assert Decimal(gateway.usage(key_id)["spent_usd"]) == PRICE


def test_same_key_different_body_is_conflict(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    client = openai_client(key)
    client.images.generate(model=MODEL, prompt="first", extra_headers={"Idempotency-Key": "job-2"})
    with pytest.raises(openai.ConflictError) as caught:
        client.images.generate(model=MODEL, prompt="second", extra_headers={"Idempotency-Key": "job-2"})
    assert caught.value.body["code"] == "idempotency_key_reused"


def test_failed_first_attempt_lets_the_retry_through(gateway: Gateway, simulator: Simulator) -> None:
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    headers = {"Idempotency-Key": "job-3"}
    assert generate(gateway, key, headers=headers, simulator_fault="status=500").status_code == 502
    # A different body after a failure is a new attempt, not a conflict: nothing was kept.
    ok = generate(gateway, key, headers=headers)
    assert ok.status_code == 200
    replay = generate(gateway, key, headers=headers)
    assert replay.headers["x-idempotent-replayed"] == "true"
    assert replay.content == ok.content
    assert Decimal(gateway.usage(key_id)["spent_usd"]) == PRICE


def test_idempotency_keys_are_per_team_key(gateway: Gateway, simulator: Simulator) -> None:
    first, _ = gateway.create_key()
    second, _ = gateway.create_key()
    before = simulator.count()
    for key in (first, second):
        response = generate(gateway, key, headers={"Idempotency-Key": "same"}, prompt="shared id")
        assert response.status_code == 200
        assert "x-idempotent-replayed" not in response.headers
    assert simulator.count() - before == 2


def test_replay_requires_a_valid_key(gateway: Gateway) -> None:
    key, _ = gateway.create_key()
    headers = {"Idempotency-Key": "job-4"}
    assert generate(gateway, key, headers=headers).status_code == 200
    assert generate(gateway, f"{key[:-4]}AAAA", headers=headers).status_code == 401


def test_a_replay_says_it_cost_nothing_and_was_replayed(gateway: Gateway) -> None:
    """The finance reader sums x-gateway-cost-usd per response: a replay charged nothing."""
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    headers = {"Idempotency-Key": "job-cost"}
    first = generate(gateway, key, headers=headers, n=2)
    replay = generate(gateway, key, headers=headers, n=2)
    assert first.headers["x-gateway-cost-usd"] == str(2 * PRICE) + "000"
    assert "x-idempotent-replayed" not in first.headers
    assert replay.headers["x-gateway-cost-usd"] == "0.000000"
    assert replay.headers["x-idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert Decimal(gateway.usage(key_id)["spent_usd"]) == 2 * PRICE
