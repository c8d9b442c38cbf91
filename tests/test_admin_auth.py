"""Admin token guessing is slowed per client address, and every admin action is audited.

Real gateways on loopback. uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 (its default
``FORWARDED_ALLOW_IPS``), exactly as it would from a load balancer configured there, so each test
plays clients at addresses of its own and does not block the other tests' 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx

from tests.support import (
    ADMIN_TOKEN,
    TLS,
    Gateway,
    RedisServer,
    Simulator,
    metric_value,
    ready_together,
    wait_until,
)


def new_address() -> str:
    return f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def admin_get(gw: Gateway, address: str, token: str | None, path: str = "/admin/v1/keys") -> httpx.Response:
    headers = {"X-Forwarded-For": address}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(gw.url + path, headers=headers, timeout=10, verify=TLS)


def audit_lines(gw: Gateway, **match: Any) -> list[dict[str, Any]]:
    lines = []
    for line in gw.log().splitlines():
        if line.startswith("{") and '"audit"' in line:
            entry = json.loads(line)
            if all(entry.get(k) == v for k, v in match.items()):
                lines.append(entry)
    return lines


def test_ten_wrong_tokens_block_the_address_whatever_it_sends(gateway: Gateway) -> None:
    guesser, bystander = new_address(), new_address()
    before = gateway.metrics()
    guesses = [f"guess-{secrets.token_hex(8)}" for _ in range(10)]
    for guess in guesses:
        response = admin_get(gateway, guesser, guess)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_admin_token"
    blocked = admin_get(gateway, guesser, ADMIN_TOKEN)  # even the right token: guessing gains nothing
    assert blocked.status_code == 429
    assert blocked.json()["error"] == {
        "message": "Too many wrong admin tokens from this address; try again later.",
        "type": "rate_limit_exceeded",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert 290 <= int(blocked.headers["retry-after"]) <= 300
    assert admin_get(gateway, guesser, "another-guess").status_code == 429
    assert admin_get(gateway, bystander, ADMIN_TOKEN).status_code == 200  # other addresses unaffected

    failed = wait_until(lambda: len(audit_lines(gateway, audit="admin.auth_failed", client=guesser)) == 10)
    assert failed
    assert audit_lines(gateway, audit="admin.auth_blocked", client=guesser)[0]["block_s"] == 300
    log = gateway.log()
    assert ADMIN_TOKEN not in log and not any(guess in log for guess in guesses)
    after = gateway.metrics()
    name = "gateway_admin_auth_failures_total"
    assert (
        metric_value(after, name, reason="invalid_token") - metric_value(before, name, reason="invalid_token")
        == 10
    )
    assert metric_value(after, name, reason="blocked") - metric_value(before, name, reason="blocked") == 2


def test_no_credential_is_not_a_guess(gateway: Gateway) -> None:
    """Requests without an Authorization header guess nothing: 401, never counted towards a block."""
    address = new_address()
    for _ in range(15):
        assert admin_get(gateway, address, None).status_code == 401
    assert admin_get(gateway, address, ADMIN_TOKEN).status_code == 200
    assert not audit_lines(gateway, client=address, audit="admin.auth_failed")


def test_the_count_is_shared_by_replicas_and_the_block_ends(
    redis_factory: Callable[..., RedisServer], simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    redis = redis_factory()
    first = gateway_factory(redis.url, simulator.url, wait_ready=False, GATEWAY_ADMIN_AUTH_BLOCK_S="2")
    second = gateway_factory(redis.url, simulator.url, wait_ready=False, GATEWAY_ADMIN_AUTH_BLOCK_S="2")
    ready_together(first, second)
    address = new_address()
    for i in range(10):  # five guesses on each replica
        assert admin_get(first if i % 2 else second, address, "wrong").status_code == 401
    for replica in (first, second):
        refused = admin_get(replica, address, ADMIN_TOKEN)
        assert refused.status_code == 429 and refused.headers["retry-after"] in ("1", "2")
    # Asking during the block does not lengthen it: poll until the 2 s block has run out.
    wait_until(lambda: admin_get(first, address, ADMIN_TOKEN).status_code == 200, 5, what="block ended")
    assert admin_get(second, address, ADMIN_TOKEN).status_code == 200


def test_a_redis_outage_is_no_guessing_window(
    redis_factory: Callable[..., RedisServer], simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    redis = redis_factory()
    gw = gateway_factory(redis.url, simulator.url)
    redis.kill()
    for token in ("wrong", ADMIN_TOKEN):  # the same answer for both: nothing learnt
        response = admin_get(gw, new_address(), token)
        assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"


def test_every_admin_action_writes_one_audit_line_without_secrets(gateway: Gateway) -> None:
    address = new_address()
    model = f"audit-model-{secrets.token_hex(3)}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Forwarded-For": address}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10, verify=TLS) as admin:
        created = admin.post(
            "/admin/v1/keys", json={"team": "audit", "name": "audited", "budget_usd": "1"}
        ).json()
        key_id = created["key_id"]
        secrets_seen = [created["key"]]
        assert admin.patch(f"/admin/v1/keys/{key_id}", json={"rpm": 5}).status_code == 200
        secrets_seen.append(
            admin.post(f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 0}).json()["key"]
        )
        assert admin.delete(f"/admin/v1/keys/{key_id}").status_code == 200
        assert admin.put(f"/admin/v1/prices/{model}", json={"price_usd": "0.25"}).status_code == 200
        assert admin.delete(f"/admin/v1/prices/{model}").status_code == 200
        assert admin.get("/admin/v1/keys").status_code == 200  # reading is not audited

    expected = [
        ("admin-token.used", {"method": "POST", "path": "/admin/v1/keys"}),  # the break-glass token's use
        ("key.create", {"key_id": key_id, "team": "audit"}),
        ("key.update", {"key_id": key_id, "fields": ["rpm"]}),
        ("key.rotate", {"key_id": key_id, "grace_seconds": 0}),
        ("key.revoke", {"key_id": key_id}),
        ("price.set", {"model": model, "price_usd": "0.250000"}),
        ("price.delete", {"model": model}),
    ]
    lines = wait_until(lambda: (found := audit_lines(gateway, client=address)) and len(found) >= 7 and found)
    assert [line["audit"] for line in lines] == [action for action, _ in expected]
    for line, (_, fields) in zip(lines, expected, strict=True):
        assert line["via"] == "api" and line["actor"] == "admin-token" and isinstance(line["ts"], float)
        assert {k: line[k] for k in fields} == fields
    text = json.dumps(lines)
    assert ADMIN_TOKEN not in text and not any(s in text or s[-20:] in text for s in secrets_seen)
