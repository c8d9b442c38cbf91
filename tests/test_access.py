"""Named admin credentials with roles, on real gateways and a real Redis: what each role may do
and see, revocation and expiry (of the API's answers and of console sessions), the guessing block.

Most tests share the session's gateway and Redis: each uses teams and credential names of its own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.core.settings import SettingsError, load_settings
from tests.support import (
    ADMIN_TOKEN,
    MODEL,
    TLS,
    Gateway,
    RedisServer,
    Simulator,
    UtcSpan,
    generate,
    ready_together,
    run_cli,
    wait_until,
)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def new_address() -> str:
    return f"203.0.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def as_(gw: Gateway, token: str, address: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": address or new_address()}
    return httpx.Client(base_url=gw.url, headers=headers, timeout=30, verify=TLS)


def grant(
    gw: Gateway, role: str, teams: list[str] | None = None, token: str = ADMIN_TOKEN, **more: Any
) -> tuple[str, str]:
    """A new credential of ``role``: (its name, its token)."""
    name = unique(role)
    with as_(gw, token) as admin:
        answer = admin.post("/admin/v1/access", json={"name": name, "role": role, "teams": teams, **more})
    assert answer.status_code == 201, answer.text
    return name, answer.json()["token"]


def key_status(gw: Gateway, key_id: str) -> str:
    with gw.admin() as admin:
        return str(admin.get(f"/admin/v1/keys/{key_id}").json()["status"])


def in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).astimezone().isoformat()


def test_a_credential_is_shown_once_listed_without_its_token_and_kept_hashed(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    name = unique("alice")
    expires = in_an_hour()
    with as_(gateway, ADMIN_TOKEN) as admin:
        granted = admin.post(
            "/admin/v1/access", json={"name": name, "role": "finance", "expires_at": expires}
        )
        assert granted.status_code == 201, granted.text
        body = granted.json()
        token = body.pop("token")
        assert token.startswith("gw-cred-") and body["last4"] == token[-4:]
        assert (
            body["role"] == "finance" and body["status"] == "active" and body["created_by"] == "admin-token"
        )
        listed = [c for c in admin.get("/admin/v1/access").json()["data"] if c["name"] == name]
    assert listed == [body] and "token" not in listed[0]
    stored = b"".join(k + v for k, v in redis_server.client().hgetall("gw:access").items())
    assert token.encode() not in stored and token[-30:].encode() not in stored
    with as_(gateway, token) as finance:
        assert finance.get("/admin/v1/keys").status_code == 200


def test_finance_reads_everything_sets_team_budgets_and_nothing_else(gateway: Gateway) -> None:
    team = unique("fin-team")
    key, key_id = gateway.create_key(team=team)
    span = UtcSpan()
    assert generate(gateway, key).status_code == 200
    _, token = grant(gateway, "finance")
    with as_(gateway, token) as finance:
        for path in (
            "/admin/v1/keys",
            f"/admin/v1/keys/{key_id}",
            f"/admin/v1/keys/{key_id}/usage",
            "/admin/v1/teams",
            f"/admin/v1/teams/{team}/usage",
            "/admin/v1/prices",
            "/admin/v1/audit",
        ):
            assert finance.get(path).status_code == 200, path
        report = finance.get("/admin/v1/reports/spend", params=span.range()).json()
        assert team in [row["team"] for row in report["data"]]
        assert (
            finance.put(
                f"/admin/v1/teams/{team}", json={"budget_usd": "10", "alert_thresholds": ["0.5"]}
            ).status_code
            == 200
        )
        refusals = {
            "Issuing and changing keys needs the role admin or team-admin": [
                finance.post("/admin/v1/keys", json={"team": team, "name": "x"}),
                finance.delete(f"/admin/v1/keys/{key_id}"),
                finance.post(f"/admin/v1/keys/{key_id}/rotate"),
                finance.patch(f"/admin/v1/keys/{key_id}", json={"rpm": 1}),
            ],
            "Changing prices needs the role admin": [
                finance.put(f"/admin/v1/prices/{MODEL}", json={"price_usd": "9"})
            ],
            "Managing access needs the role admin": [
                finance.post("/admin/v1/access", json={"name": unique("x"), "role": "admin"}),
                finance.get("/admin/v1/access"),
            ],
        }
    for message, answers in refusals.items():
        for answer in answers:
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"]["message"] == f"{message}; this credential has the role finance."
            assert answer.json()["error"]["code"] == "insufficient_role"
    assert key_status(gateway, key_id) == "active"


def test_a_team_admin_sees_and_manages_only_its_teams_as_if_no_other_existed(gateway: Gateway) -> None:
    mine, theirs = unique("mine"), unique("theirs")
    my_key, my_key_id = gateway.create_key(team=mine)
    their_key, their_key_id = gateway.create_key(team=theirs)
    span = UtcSpan()
    for key in (my_key, their_key):
        assert generate(gateway, key, n=2).status_code == 200
    _, token = grant(gateway, "team-admin", [mine])
    with as_(gateway, token) as lead:
        assert {k["team"] for k in lead.get("/admin/v1/keys").json()["data"]} == {mine}
        assert lead.get("/admin/v1/keys", params={"team": theirs}).json()["data"] == []
        for answer in (
            lead.get(f"/admin/v1/keys/{their_key_id}"),
            lead.get(f"/admin/v1/keys/{their_key_id}/usage"),
            lead.patch(f"/admin/v1/keys/{their_key_id}", json={"rpm": 1}),
            lead.post(f"/admin/v1/keys/{their_key_id}/rotate"),
            lead.delete(f"/admin/v1/keys/{their_key_id}"),
            lead.get(f"/admin/v1/teams/{theirs}"),
            lead.get(f"/admin/v1/teams/{theirs}/usage"),
        ):
            assert answer.status_code == 404, answer.text
        refused = lead.post("/admin/v1/keys", json={"team": theirs, "name": "sneaky"})
        assert refused.status_code == 403
        assert refused.json()["error"]["message"].startswith(
            f"Issuing and changing keys for team '{theirs}' needs"
        )
        created = lead.post("/admin/v1/keys", json={"team": mine, "name": "lead-bot"})
        assert created.status_code == 201
        assert lead.post(f"/admin/v1/keys/{my_key_id}/rotate", json={"grace_seconds": 0}).status_code == 200
        assert lead.delete(f"/admin/v1/keys/{created.json()['key_id']}").status_code == 200
        assert [t["team"] for t in lead.get("/admin/v1/teams").json()["data"]] == [mine]
        by_team = lead.get("/admin/v1/reports/spend", params=span.range()).json()
        assert [row["team"] for row in by_team["data"]] == [mine]
        assert by_team["totals"]["images"] == 2  # the totals are of its team only, too
        by_key = lead.get("/admin/v1/reports/spend", params={**span.range(), "group_by": "key"}).json()
        assert {row["key_id"] for row in by_key["data"]} == {my_key_id}
        export = lead.get("/admin/v1/usage", params=span.range()).text.splitlines()
        assert export and all(f'"team":"{mine}"' in line for line in export)
        for answer, needs in (
            (
                lead.put(f"/admin/v1/teams/{mine}", json={"budget_usd": "1"}),
                "Setting a team's budget needs the role admin or finance",
            ),
            (lead.get("/admin/v1/audit"), "Reading the audit trail needs the role admin or finance"),
            (
                lead.put(f"/admin/v1/prices/{MODEL}", json={"price_usd": "1"}),
                "Changing prices needs the role admin",
            ),
        ):
            assert answer.status_code == 403
            assert answer.json()["error"]["message"] == f"{needs}; this credential has the role team-admin."
    assert key_status(gateway, their_key_id) == "active"


def test_only_admins_manage_access_and_what_they_grant_is_checked(gateway: Gateway) -> None:
    admin_name, admin_token = grant(gateway, "admin")
    name, _ = grant(gateway, "finance", token=admin_token)  # a named admin may grant
    with as_(gateway, admin_token) as admin:
        taken = admin.post("/admin/v1/access", json={"name": name, "role": "admin"})
        assert taken.status_code == 409 and taken.json()["error"]["param"] == "name"
        for body in (
            {"name": unique("t"), "role": "team-admin"},
            {"name": unique("t"), "role": "finance", "teams": ["design"]},
            {"name": unique("t"), "role": "owner"},
            {"name": unique("t"), "role": "admin", "expires_at": "2030-01-01T00:00:00"},  # no offset
            {"name": unique("t"), "role": "admin", "expires_at": "2020-01-01T00:00:00+00:00"},
            {"name": "no spaces", "role": "admin"},
        ):
            assert admin.post("/admin/v1/access", json=body).status_code == 400, body
        assert admin.delete(f"/admin/v1/access/{unique('nobody')}").status_code == 404
        revoked = admin.delete(f"/admin/v1/access/{name}")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert (
            admin.post("/admin/v1/access", json={"name": name, "role": "finance"}).status_code == 201
        )  # free again
    entries = {(e["action"], e["target"].get("name")) for e in audit_of(gateway, actor=admin_name)}
    assert {("access.grant", name), ("access.revoke", name)} <= entries


def audit_of(gw: Gateway, **match: Any) -> list[dict[str, Any]]:
    with gw.admin() as admin:
        entries = admin.get("/admin/v1/audit", params={"limit": 1000}).json()["data"]
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def test_an_expired_credential_is_refused_with_401(gateway: Gateway) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    _, token = grant(gateway, "admin", expires_at=soon)
    address = new_address()
    with as_(gateway, token, address) as admin:
        assert admin.get("/admin/v1/keys").status_code == 200
        expired = wait_until(lambda: (a := admin.get("/admin/v1/keys")).status_code == 401 and a, 10, 0.2)
    assert expired.json()["error"]["code"] == "admin_credential_expired"
    assert expired.json()["error"]["message"].startswith("This admin credential expired at ")


def test_wrong_credential_tokens_count_towards_the_same_block(gateway: Gateway) -> None:
    _, token = grant(gateway, "admin")
    address = new_address()
    credential_id = token.split("_")[0]
    guesses = [f"{credential_id}_{secrets.token_urlsafe(32)}" for _ in range(5)]  # its id, wrong secrets
    guesses += [f"gw-cred-{'a' * 12}_{secrets.token_urlsafe(32)}" for _ in range(5)]
    for guess in guesses:
        with as_(gateway, guess, address) as guesser:
            assert guesser.get("/admin/v1/keys").status_code == 401
    for right in (token, ADMIN_TOKEN):  # now nothing works from there, the right tokens included
        with as_(gateway, right, address) as blocked:
            assert blocked.get("/admin/v1/keys").status_code == 429
    assert not any(guess in gateway.log() for guess in guesses)


def sign_in_console(gw: Gateway, token: str) -> httpx.Client:
    """A console session (as the browser's sign-in does) in a client that keeps its cookie."""
    client = httpx.Client(base_url=gw.url, timeout=30, verify=TLS, headers={"X-Forwarded-For": new_address()})
    answer = client.post("/console/api/session", json={"token": token})
    assert answer.status_code == 200, answer.text
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client


def test_a_revoked_credential_is_refused_at_once_on_every_replica_with_its_console_sessions(
    redis_factory: Callable[..., RedisServer], simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    redis = redis_factory()
    first = gateway_factory(redis.url, simulator.url, wait_ready=False)
    second = gateway_factory(redis.url, simulator.url, wait_ready=False)
    ready_together(first, second)
    name, token = grant(first, "admin")
    console = sign_in_console(second, token)
    assert console.get("/console/api/keys").status_code == 200
    with as_(second, token) as on_second:
        assert on_second.get("/admin/v1/keys").status_code == 200
        with as_(first, ADMIN_TOKEN) as root:
            assert root.delete(f"/admin/v1/access/{name}").status_code == 200
        assert on_second.get("/admin/v1/keys").status_code == 401  # the very next request
    assert console.get("/console/api/keys").status_code == 401
    assert console.post("/console/api/keys", json={"team": "t", "name": "n"}).status_code == 401
    console.close()


def test_a_console_session_ends_when_the_root_token_changes(
    redis_factory: Callable[..., RedisServer], simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    """A leaked root token is replaced and the gateway restarted: sessions it made end with it."""
    redis = redis_factory()
    before = gateway_factory(redis.url, simulator.url)
    console = sign_in_console(before, ADMIN_TOKEN)
    assert console.get("/console/api/keys").status_code == 200
    before.stop()
    after = gateway_factory(redis.url, simulator.url, GATEWAY_ADMIN_TOKEN="rotated-" + secrets.token_hex(16))
    console.base_url = httpx.URL(after.url)
    assert console.get("/console/api/keys").status_code == 401
    minted = console.post("/console/api/keys", json={"team": "t", "name": "n", "budget_usd": "100000"})
    assert minted.status_code == 401
    assert redis.client().scard("gw:keys") == 0
    console.close()


def test_a_console_session_lasts_no_longer_than_its_credential(gateway: Gateway) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=3)
    _, token = grant(gateway, "finance", expires_at=soon.isoformat())
    console = sign_in_console(gateway, token)
    (cookie,) = console.cookies.jar
    assert cookie.expires is not None and cookie.expires <= soon.timestamp() + 1
    session = console.get("/console/api/session").json()
    assert session["role"] == "finance" and session["actor"].startswith("finance-")
    assert session["permissions"] == ["read", "team_settings", "audit"]
    cookie_header = {"Cookie": f"gw_console={console.cookies['gw_console']}"}  # sent even after it expired
    keys_page = gateway.url + "/console/api/keys"
    wait_until(lambda: httpx.get(keys_page, headers=cookie_header, verify=TLS).status_code == 401, 10, 0.2)
    console.close()


def test_the_cli_grants_lists_and_revokes_credentials(gateway: Gateway, redis_server: RedisServer) -> None:
    name = unique("cli-lead")
    teams = ["--team", "design", "--team", "ads"]
    made = run_cli(
        redis_server.url,
        "access",
        "grant",
        name,
        "--role",
        "team-admin",
        *teams,
        "--expires",
        in_an_hour(),
        "--json",
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    listed = run_cli(redis_server.url, "access", "list", "--json")
    (mine,) = [c for c in json.loads(listed.stdout) if c["name"] == name]
    assert mine["teams"] == ["ads", "design"] and mine["status"] == "active" and "token" not in mine
    assert token not in listed.stdout and mine["created_by"] and mine["expires_at"]
    with as_(gateway, token) as lead:
        assert lead.get("/admin/v1/keys").status_code == 200
        assert run_cli(redis_server.url, "access", "revoke", name).returncode == 0
        assert lead.get("/admin/v1/keys").status_code == 401
    again = run_cli(redis_server.url, "access", "revoke", name)
    assert again.returncode == 1 and f"no credential named '{name}' in force" in again.stderr
    lonely = run_cli(redis_server.url, "access", "grant", unique("x"), "--role", "team-admin")
    assert lonely.returncode == 1 and "a team-admin credential needs at least one team" in lonely.stderr


def test_of_many_grants_of_one_name_at_once_exactly_one_wins(gateway: Gateway) -> None:
    name = unique("race")

    async def race() -> list[int]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, verify=TLS, timeout=30) as client:
            body = {"name": name, "role": "finance"}
            answers = await asyncio.gather(*(client.post("/admin/v1/access", json=body) for _ in range(20)))
        return sorted(answer.status_code for answer in answers)

    assert asyncio.run(race()) == [201] + [409] * 19
    with gateway.admin() as admin:
        assert [c["status"] for c in admin.get("/admin/v1/access").json()["data"] if c["name"] == name] == [
            "active"
        ]


def test_the_identity_provider_must_be_https_or_on_this_machine() -> None:
    client = {"oidc_client_id": "console", "oidc_client_secret": "s"}
    for issuer in (
        "https://sso.example.com/realms/company",
        "http://127.0.0.1:8443",
        "http://localhost:9000/x",
    ):
        assert load_settings(oidc_issuer=issuer, **client).oidc_issuer == issuer
    for issuer in (
        "http://sso.example.com",
        "http://10.0.0.5",
        "ftp://127.0.0.1",
        "https://sso.example.com/?a=b",
    ):
        with pytest.raises(SettingsError, match="GATEWAY_OIDC_ISSUER: .*https"):
            load_settings(oidc_issuer=issuer, **client)
    with pytest.raises(SettingsError, match="needs GATEWAY_OIDC_CLIENT_ID and GATEWAY_OIDC_CLIENT_SECRET"):
        load_settings(oidc_issuer="https://sso.example.com")
