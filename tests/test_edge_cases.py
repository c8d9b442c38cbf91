"""Edge cases of four hardenings: export dates the ledger cannot hold, a grace per rotated secret,
one rule for model names, and an upstream answer with an oversized header."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.scripted_upstream import ScriptedUpstream, answer_json, ledger_record
from tests.support import ADMIN_TOKEN, MODEL, TLS, Gateway, RedisServer, Simulator, run_cli, wait_until


def generate(gw: Gateway, key: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "prompt": "a lighthouse"},
        timeout=30,
        verify=TLS,
    )


# -- (a) export dates outside what the ledger holds --------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [("9999-12-01", "9999-12-31"), ("0001-01-01", "0001-01-02"), ("1969-12-31", "1970-01-01")],
)
def test_export_of_dates_the_ledger_cannot_hold_is_a_400(gateway: Gateway, start: str, end: str) -> None:
    with gateway.admin() as admin:
        for path in ("/admin/v1/usage", "/admin/v1/reports/spend"):
            response = admin.get(path, params={"start": start, "end": end})
            assert response.status_code == 400, (path, response.text)
            assert "1970-01-01" in response.json()["error"]["message"]


def test_export_of_the_last_and_first_days_it_can_hold_answers(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        for start, end in (("9999-12-30", "9999-12-30"), ("1970-01-01", "1970-01-01")):
            assert admin.get("/admin/v1/usage", params={"start": start, "end": end}).status_code == 200


# -- (b) each rotated secret keeps its own grace ---------------------------------------------


def test_a_second_rotation_keeps_the_first_rotations_grace(gateway: Gateway) -> None:
    first, key_id = gateway.create_key()
    with gateway.admin() as admin:
        rotated = admin.post(f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 300})
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["key"]
        rotated = admin.post(f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 5})
        third = rotated.json()["key"]
    for secret in (second, first, third):
        assert generate(gateway, secret).status_code == 200, "a secret in its grace was refused"
        models = httpx.get(
            f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, verify=TLS
        )
        assert models.status_code == 200, models.text
    # The second secret's 5 s grace ends; the first keeps its 300 s.
    wait_until(lambda: generate(gateway, second).status_code == 401, timeout_s=20, what="second grace over")
    assert generate(gateway, first).status_code == 200
    assert generate(gateway, third).status_code == 200


# -- (c) one rule for model names ------------------------------------------------------------


def test_a_model_name_with_a_comma_is_refused_everywhere(gateway: Gateway, redis_server: RedisServer) -> None:
    with gateway.admin() as admin:
        response = admin.put("/admin/v1/prices/a,b", json={"price_usd": "0.01"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "model"
        assert admin.put("/admin/v1/prices/a|b", json={"price_usd": "0.01"}).status_code == 400
        response = admin.post("/admin/v1/keys", json={"team": "t", "name": "n", "models": ["a,b"]})
        assert response.status_code in (400, 422), response.text
        # A bad name stored before the rule can still be withdrawn.
        assert admin.delete("/admin/v1/prices/a,b").status_code == 200
    cli = run_cli(redis_server.url, "prices", "set", "a,b", "0.01")
    assert cli.returncode != 0 and "a,b" in (cli.stderr + cli.stdout)
    cli = run_cli(redis_server.url, "keys", "create", "--team", "t", "--name", "n", "--models", "a,b,c d")
    assert cli.returncode != 0


def test_a_key_listing_two_models_does_not_allow_their_comma_joined_name(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    import redis

    key, _ = gateway.create_key(models=[MODEL, "other"])
    # A price stored for "MODEL,other" before the rule (written straight into Redis).
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.hset("gw:prices", f"{MODEL},other", 1000)
        wait_until(lambda: generate(gateway, key, f"{MODEL},other").status_code != 404, what="price seen")
        assert generate(gateway, key, f"{MODEL},other").status_code == 403
    finally:
        client.hdel("gw:prices", f"{MODEL},other")


def test_a_prices_file_with_a_bad_model_name_is_refused(tmp_path) -> None:
    from gateway.money.pricing import load_prices_file

    path = tmp_path / "prices.yaml"
    path.write_text('models:\n  "a,b": {price_usd: "0.1"}\n')
    with pytest.raises(ValueError, match="a,b"):
        load_prices_file(path)


# -- (d) an upstream 200 with an oversized header --------------------------------------------


def test_an_upstream_200_with_a_20_kb_header_is_a_bad_response_for_reconciliation(
    redis_server: RedisServer, upstream: ScriptedUpstream, gateway_factory: Callable[..., Gateway]
) -> None:
    document: dict[str, Any] = {"created": 1, "data": [{"url": "https://x.invalid/0.png"}]}
    upstream.answer = answer_json(200, document, headers={"x-big": "a" * 20_000})
    gw = gateway_factory(redis_server.url, upstream.url)
    key, _ = gw.create_key()
    response = generate(gw, key)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_bad_response"
    record = ledger_record(gw, response.headers["x-request-id"])
    assert (record["outcome"], record["reconcile"], record["charge_micros"]) == ("bad_response", 1, 0)


_ = (ADMIN_TOKEN, Simulator, time)
