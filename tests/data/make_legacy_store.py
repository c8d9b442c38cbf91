"""Make ``legacy-store.keys.json``: a Redis store written by the release before team budgets.

The upgrade test (tests/test_layout_upgrade.py) restores it into a fresh redis-server and starts
today's gateway on it. It was written by the real previous release, not imitated: run from the
repository root, with that release checked out somewhere, e.g.

    git worktree add --detach /tmp/old-release 4e2d757
    .venv/bin/python tests/data/make_legacy_store.py /tmp/old-release

It writes ``tests/data/legacy-store.keys.json`` (every key as Redis' own DUMP payload, with its time
to live counted from the moment it was saved, never an absolute expiry: restored on any later day,
the store is the one the old release left, not one whose daily counters have lapsed) and
``tests/data/legacy-store.json`` (the keys' secrets, ids and what they spent: test keys of a
throwaway store, nothing real).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    ADMIN_TOKEN,
    MODEL,
    RedisServer,
    Simulator,
    free_port,
    gateway_env,
    wait_until,
)

HERE = Path(__file__).resolve().parent


def main(old_release: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="legacy-store-"))
    redis = RedisServer(work / "redis").start()
    simulator = Simulator(work / "simulator.log").start()
    port = free_port()
    env = {
        **os.environ,
        **gateway_env(redis.url, simulator.url, work / "state"),
        "GATEWAY_PORT": str(port),
        "PYTHONPATH": str(old_release),
    }
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        cwd=old_release,
        stdout=open(work / "gateway.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 30, what="the old release's gateway")
        facts = _write_history(url)
        facts["reservation"] = _hold_a_reservation(old_release, redis.url, facts["keys"]["budgeted"])
    finally:
        gateway.terminate()
        gateway.wait(15)
        simulator.stop()
    with redis.client() as client:
        saved_at_ms = int(time.time() * 1000)
        version = client.info("server")["redis_version"]
        keys = []
        for name in sorted(k.decode() for k in client.keys("*")):
            ttl_ms = client.pttl(name)
            dump = client.dump(name)
            dumped = base64.b64encode(dump).decode()
            keys.append({"key": name, "ttl_ms": ttl_ms if ttl_ms > 0 else None, "dump": dumped})
    redis.stop()
    store = {"redis": version, "saved_at_ms": saved_at_ms, "keys": keys}
    (HERE / "legacy-store.keys.json").write_text(json.dumps(store, indent=1) + "\n")
    (HERE / "legacy-store.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _write_history(url: str) -> dict:
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    specs = {
        "budgeted": {"team": "legacy", "name": "budgeted", "budget_usd": "1", "budget_period": "total"},
        "unbudgeted": {"team": "legacy", "name": "unbudgeted"},
        "revoked": {"team": "legacy", "name": "revoked"},
        "rotated": {"team": "other", "name": "rotated"},
    }
    keys = {}
    for label, spec in specs.items():
        body = admin.post("/admin/v1/keys", json=spec).json()
        keys[label] = {"key_id": body["key_id"], "secret": body["key"]}
    calls = [("budgeted", 1, None), ("budgeted", 1, None), ("budgeted", 1, "idem-legacy")]
    calls += [("unbudgeted", 2, None), ("unbudgeted", 2, None), ("revoked", 1, None), ("rotated", 1, None)]
    for label, n, idempotency_key in calls:
        headers = {"Authorization": f"Bearer {keys[label]['secret']}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        response = httpx.post(
            f"{url}/v1/images/generations",
            headers=headers,
            json={"model": MODEL, "prompt": "legacy", "n": n, "response_format": "url"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    assert admin.delete(f"/admin/v1/keys/{keys['revoked']['key_id']}").status_code == 200
    rotated = admin.post(f"/admin/v1/keys/{keys['rotated']['key_id']}/rotate", json={"grace_seconds": 0})
    keys["rotated"]["secret"] = rotated.json()["key"]
    return {
        "release": "4e2d757",
        "day": time.strftime("%Y-%m-%d", time.gmtime()),
        "model": MODEL,
        "keys": keys,
        "spent_micros": {"budgeted": 405_000, "unbudgeted": 540_000, "revoked": 135_000, "rotated": 135_000},
        "records": 7,
    }


def _hold_a_reservation(old_release: Path, redis_url: str, key: dict) -> str:
    """A reservation whose holder died: its deadline passed; today's gateway must sweep it."""
    program = f"""
import asyncio
from redis.asyncio import Redis
from gateway import budget
from gateway.keys import parse_token
from gateway.periods import Periods

async def main():
    client = Redis.from_url({redis_url!r})
    secret_hash = parse_token({key["secret"]!r})[1]
    held = await budget.reserve(client, key_id={key["key_id"]!r}, secret_hash=secret_hash,
        model={MODEL!r}, request_id="req_held_by_the_dead", max_images=2, unit_price_micros=135000,
        lifetime_ms=1, periods=Periods.now())
    assert isinstance(held, budget.Reservation), held
    await client.aclose()

asyncio.run(main())
"""
    env = {**os.environ, "PYTHONPATH": str(old_release)}
    subprocess.run([sys.executable, "-c", program], env=env, cwd=old_release, check=True)
    return "req_held_by_the_dead"


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
