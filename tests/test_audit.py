"""The audit trail: every change through the API, the console and the CLI is an entry naming its
actor and door, read back newest first (``GET /admin/v1/audit``, ``gateway audit list``), filtered
by time, never holding a secret, and kept for the stated retention. Real gateway, real Redis,
the CLI as an operator runs it.
"""

from __future__ import annotations

import getpass
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support import ADMIN_TOKEN, MODEL, TLS, Gateway, RedisServer, Simulator, run_cli


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def audit(gw: Gateway, token: str = ADMIN_TOKEN, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(gw.url + "/admin/v1/audit", params=params, headers=headers, verify=TLS, timeout=30)


def test_changes_through_api_console_and_cli_are_entries_naming_who_and_how(
    redis_factory: Callable[..., RedisServer], simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    redis = redis_factory()
    gw = gateway_factory(redis.url, simulator.url)
    started_ms = int(time.time() * 1000)
    with gw.admin() as root:
        granted = root.post("/admin/v1/access", json={"name": "ops-bot", "role": "admin"}).json()
        lead = root.post(
            "/admin/v1/access", json={"name": "lead", "role": "team-admin", "teams": ["design"]}
        ).json()
    secrets_seen = [granted["token"], lead["token"]]
    with httpx.Client(
        base_url=gw.url, headers={"Authorization": f"Bearer {granted['token']}"}, verify=TLS
    ) as ops:
        created = ops.post("/admin/v1/keys", json={"team": "design", "name": "poster-bot"}).json()
        secrets_seen.append(created["key"])
        assert ops.put(f"/admin/v1/prices/{MODEL}", json={"price_usd": "0.2"}).status_code == 200
    with httpx.Client(base_url=gw.url, verify=TLS) as console:
        session = console.post("/console/api/session", json={"token": lead["token"]}).json()
        console.headers["X-CSRF-Token"] = session["csrf_token"]
        rotated = console.post(f"/console/api/keys/{created['key_id']}/rotate", json={"grace_seconds": 0})
        secrets_seen.append(rotated.json()["key"])
    made = run_cli(redis.url, "keys", "create", "--team", "design", "--name", "cli-bot", "--json")
    assert made.returncode == 0, made.stderr
    secrets_seen.append(json.loads(made.stdout)["key"])
    assert run_cli(redis.url, "teams", "set", "design", "--budget-usd", "50").returncode == 0
    assert run_cli(redis.url, "prices", "set", MODEL, "0.135").returncode == 0
    cli_grant = run_cli(redis.url, "access", "grant", "auditor", "--role", "finance", "--json")
    secrets_seen.append(json.loads(cli_grant.stdout)["token"])
    assert run_cli(redis.url, "access", "revoke", "auditor").returncode == 0

    answer = audit(gw)
    assert answer.status_code == 200
    entries = answer.json()["data"]
    ours = [(e["action"], e["actor"], e["via"]) for e in entries if e["action"] != "admin-token.used"]
    user = getpass.getuser()
    assert ours == [  # newest first
        ("access.revoke", user, "cli"),
        ("access.grant", user, "cli"),
        ("price.set", user, "cli"),
        ("team.set", user, "cli"),
        ("key.create", user, "cli"),
        ("key.rotate", "lead", "console"),
        ("console.sign_in", "lead", "console"),
        ("price.set", "ops-bot", "api"),
        ("key.create", "ops-bot", "api"),
        ("access.grant", "admin-token", "api"),
        ("access.grant", "admin-token", "api"),
    ]
    by_action = {(e["action"], e["actor"]): e for e in entries}
    assert by_action[("key.create", "ops-bot")]["target"] == {"key_id": created["key_id"], "team": "design"}
    assert by_action[("team.set", user)]["target"] == {"team": "design", "fields": ["budget_usd"]}
    assert by_action[("access.grant", user)]["target"]["name"] == "auditor"
    assert by_action[("admin-token.used", "admin-token")]["target"]["path"] == "/admin/v1/access"
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() * 1000 for e in entries]
    assert times == sorted(times, reverse=True) and times[-1] >= started_ms - 1000
    text = json.dumps(entries) + gw.log()
    assert not any(s in text or s[-20:] in text for s in secrets_seen) and ADMIN_TOKEN not in text

    listed = run_cli(redis.url, "audit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == entries  # the same trail, read by the CLI
    table = run_cli(redis.url, "audit", "list", "--limit", "2")
    assert table.stdout.splitlines()[0].split() == ["time", "action", "actor", "via", "client", "target"]
    assert "access.revoke" in table.stdout and "name=auditor" in table.stdout


def test_the_trail_is_filtered_by_time_and_paged(gateway: Gateway) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    team = unique("paged")
    for _ in range(3):
        gateway.set_team(team, budget_usd="5")
    mine = [
        e
        for e in audit(gateway, since=before.isoformat(), limit=1000).json()["data"]
        if e["target"].get("team") == team
    ]
    assert len(mine) == 3
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    old = audit(gateway, until=yesterday).json()["data"]
    assert not [e for e in old if e["target"].get("team") == team]
    first = audit(gateway, since=before.isoformat(), limit=2).json()
    assert len(first["data"]) == 2 and first["next_before"] == first["data"][-1]["id"]
    rest = audit(gateway, since=before.isoformat(), limit=1000, before=first["next_before"]).json()["data"]
    assert [e["id"] for e in first["data"]] + [e["id"] for e in rest] == [
        e["id"] for e in audit(gateway, since=before.isoformat(), limit=1000).json()["data"]
    ]
    for bad in (
        {"since": "yesterday"},
        {"until": "2026-13-01"},
        {"since": "2026-11-30T10:00:00"},
        {"before": "x"},
    ):
        refused = audit(gateway, **bad)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == next(iter(bad)), bad


def test_entries_older_than_the_retention_are_dropped(
    redis_factory: Callable[..., RedisServer], simulator: Simulator, gateway_factory: Callable[..., Gateway]
) -> None:
    redis = redis_factory()
    gw = gateway_factory(redis.url, simulator.url, GATEWAY_AUDIT_RETENTION_DAYS="1")
    client = redis.client()
    two_days_ago_ms = int(time.time() * 1000) - 2 * 86_400_000
    old = json.dumps({"ts_ms": two_days_ago_ms, "action": "key.create", "actor": "old", "via": "api"})
    client.xadd("gw:audit", {"entry": old}, id=f"{two_days_ago_ms}-0")
    assert client.xlen("gw:audit") == 1
    gw.set_team("kept", budget_usd="1")  # a change: its entry is added and what is past a day goes
    assert [e["action"] for e in audit(gw).json()["data"]] == ["team.set", "admin-token.used"]
