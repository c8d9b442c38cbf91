"""An upgrade from the release before team budgets, on a store that release really wrote.

``tests/data/legacy-store.keys.json`` was written by release 4e2d757 (tests/data/make_legacy_store.py):
four keys in two teams, seven calls, a revoked key, a rotated key, and a reservation whose holder
died. Its keys are restored with their time to live as it was when the store was saved, so the
test finds the same store on any later day. Today's gateway starts on it, moves it to the team
layout once, and everything the old release knew still holds: the same secrets work, spend
carries over to the keys and their teams, reports and exports show the old calls, and a team
budget set now counts them.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.store.keyspace import LAYOUT, KeySpace, TeamSpace, directory_entry
from tests.support import Gateway, RedisServer, Simulator, generate

DATA = Path(__file__).resolve().parent / "data"
FACTS = json.loads((DATA / "legacy-store.json").read_text())
KEYS = FACTS["keys"]


@pytest.fixture
def legacy_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path / "legacy-redis").start()
    store = json.loads((DATA / "legacy-store.keys.json").read_text())
    with server.client() as client:
        for key in store["keys"]:
            client.restore(key["key"], key["ttl_ms"] or 0, base64.b64decode(key["dump"]))
        assert client.dbsize() == len(store["keys"])
    yield server
    server.stop()


def admin_get(gateway: Gateway, path: str, **params: str) -> Any:
    with gateway.admin() as admin:
        response = admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_store_of_the_release_before_keeps_working_after_the_upgrade(
    legacy_redis: RedisServer, simulator: Simulator, gateway_factory: Any
) -> None:
    with legacy_redis.client() as client:
        assert client.get(LAYOUT) is None  # the old release wrote no marker
        assert client.hexists(directory_entry(KEYS["budgeted"]["key_id"]), "secret_hash")

    started_ms = int(time.time() * 1000)  # every record before this, the old release wrote
    gateway = gateway_factory(legacy_redis.url, simulator.url)
    assert "moved 4 keys" in gateway.log()

    # The same secrets, the same spend, and the dead holder's reservation swept on first read.
    budgeted = gateway.usage(KEYS["budgeted"]["key_id"])
    assert (budgeted["period"], budgeted["spent_usd"], budgeted["reserved_usd"]) == (
        "total",
        "0.405000",
        "0.000000",
    )
    assert generate(gateway, KEYS["budgeted"]["secret"]).status_code == 200
    assert gateway.usage(KEYS["budgeted"]["key_id"])["spent_usd"] == "0.540000"
    revoked = generate(gateway, KEYS["revoked"]["secret"])
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "key_revoked"
    assert generate(gateway, KEYS["rotated"]["secret"]).status_code == 200

    # The team's spend counts every key it ever had, the revoked one included: 0.405 + 0.135
    # (today's call) + 0.540 + 0.135. A budget set now holds against all of it.
    with gateway.admin() as admin:
        assert (
            admin.put(
                "/admin/v1/teams/legacy", json={"budget_usd": "1.5", "budget_period": "total"}
            ).status_code
            == 200
        )
    team = admin_get(gateway, "/admin/v1/teams/legacy/usage")
    assert (team["spent_usd"], team["reserved_usd"], team["remaining_usd"]) == (
        "1.215000",
        "0.000000",
        "0.285000",
    )
    statuses = [generate(gateway, KEYS["unbudgeted"]["secret"]).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = generate(gateway, KEYS["unbudgeted"]["secret"])
    assert refused.headers["x-should-retry"] == "false"
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and "Your team's (legacy" in error["message"]

    # Reports and exports of the old release's day show its calls; the sweep's record is today's.
    day = FACTS["day"]
    by_team = admin_get(gateway, "/admin/v1/reports/spend", start=day, end=day, group_by="team")
    spent = {row["team"]: row["spend_micros"] for row in by_team["data"]}
    assert spent == {"legacy": 1_080_000, "other": 135_000}
    by_key = admin_get(gateway, "/admin/v1/reports/spend", start=day, end=day, group_by="key")
    assert {row["key_name"] for row in by_key["data"]} >= {"budgeted", "unbudgeted", "revoked", "rotated"}
    with gateway.admin() as admin:
        export = admin.get("/admin/v1/usage", params={"start": day, "end": _today(), "format": "jsonl"})
    records = [json.loads(line) for line in export.text.splitlines()]
    old = [r for r in records if r["ts_ms"] < started_ms and r["outcome"] != "orphaned"]
    assert len(old) == FACTS["records"]
    orphaned = [r for r in records if r["request_id"] == FACTS["reservation"]]
    assert [(r["outcome"], r["charge_micros"], r["reconcile"]) for r in orphaned] == [("orphaned", 0, 1)]

    # Nothing of the old layout is left but the directory entries, and a restart moves nothing.
    with legacy_redis.client() as client:
        for key in KEYS.values():
            names = {n.decode() for n in client.scan_iter(match="gw:{" + key["key_id"] + "}:*")}
            assert names == {directory_entry(key["key_id"])}
        assert client.get(LAYOUT) == b"2"
        assert client.sismember(TeamSpace("legacy").keys, KEYS["revoked"]["key_id"])
    gateway.stop()
    again = gateway_factory(legacy_redis.url, simulator.url)
    assert "moved" not in again.log()
    assert admin_get(again, "/admin/v1/teams/legacy/usage")["spent_usd"] == "1.485000"
    # The rotated key has no budget, so its usage is this month's: today's call, not the old
    # release's (made in an earlier month), which its month still counts.
    rotated = again.usage(KEYS["rotated"]["key_id"])
    assert (rotated["budget_usd"], Decimal(rotated["spent_usd"])) == (None, Decimal("0.135"))
    with legacy_redis.client() as client:
        old_month = FACTS["day"][:7]
        space = KeySpace(KEYS["rotated"]["key_id"], "other")
        assert int(client.get(space.spent(f"m{old_month}")) or 0) == FACTS["spent_micros"]["rotated"]


def _today() -> str:
    """Today (UTC) as the gateway names days, read after the calls it must cover."""
    return datetime.now(UTC).date().isoformat()


def test_start_up_waits_for_the_layout_check_only_while_it_may_still_succeed() -> None:
    """A gateway started while Redis is down serves (its /healthz) as soon as the first check has
    failed, not after STARTUP_LAYOUT_WAIT_S; the check goes on in the background."""
    import asyncio

    from gateway.admin.layout_upgrade import LayoutKeeper
    from gateway.app import STARTUP_LAYOUT_WAIT_S
    from gateway.store.directory import KeyDirectory

    class Store:
        def __init__(self, down: bool) -> None:
            self.down, self.gets = down, 0

        async def get(self, name: str) -> bytes:
            self.gets += 1
            if self.down:
                raise ConnectionError("Connection refused")
            return b"2"

    async def start(store: Store) -> tuple[float, bool]:
        keeper = LayoutKeeper(store, KeyDirectory(store, ready=False), retry_every_s=0.05)
        keeper.start()
        started = time.monotonic()
        await keeper.wait(STARTUP_LAYOUT_WAIT_S)
        waited = time.monotonic() - started
        if store.down:  # retried in the background, and ready once Redis is back
            await asyncio.sleep(0.2)
            assert store.gets >= 2 and not keeper.ready
            store.down = False
            await asyncio.sleep(0.2)
        ready = keeper.ready
        await keeper.aclose()
        return waited, ready

    waited, ready = asyncio.run(start(Store(down=True)))
    assert waited < STARTUP_LAYOUT_WAIT_S / 2 and ready, waited
    waited, ready = asyncio.run(start(Store(down=False)))
    assert waited < STARTUP_LAYOUT_WAIT_S / 2 and ready, waited
