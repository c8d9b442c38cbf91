"""Key and price administration, through the admin API and the `gateway` CLI."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.support import MODEL, Gateway, generate, run_clis, run_together
from tests.support import run_cli as cli


def _in_a_year() -> str:
    """An expiry always in the future, whatever day the suite runs."""
    return (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_admin_key_lifecycle(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        created = admin.post(
            "/admin/v1/keys",
            json={
                "team": "design",
                "name": "poster bot",
                "models": [MODEL],
                "budget_usd": "12.5",
                "budget_period": "month",
                "images_per_day": 100,
                "rpm": 30,
                "max_concurrent": 4,
                "expires_at": _in_a_year(),
            },
        )
        assert created.status_code == 201
        body = created.json()
        secret, key_id = body["key"], body["key_id"]
        assert secret.startswith("sk-gw-" + key_id) and body["last4"] == secret[-4:]
        assert body["budget_usd"] == "12.500000" and body["models"] == [MODEL]
        shown = admin.get(f"/admin/v1/keys/{key_id}").json()
        listed = admin.get("/admin/v1/keys", params={"q": key_id}).json()["data"]
        assert secret not in json.dumps(shown) and secret not in json.dumps(listed)
        assert any(k["key_id"] == key_id for k in listed)
        patched = admin.patch(f"/admin/v1/keys/{key_id}", json={"rpm": None, "budget_usd": "20"}).json()
        assert (
            patched["rpm"] is None and patched["budget_usd"] == "20.000000" and patched["max_concurrent"] == 4
        )
        usage = admin.get(f"/admin/v1/keys/{key_id}/usage").json()
        assert usage["period"] == "month" and usage["remaining_usd"] == "20.000000"
        assert usage["resets_at"].endswith("T00:00:00Z")
        assert admin.delete(f"/admin/v1/keys/{key_id}").json()["status"] == "revoked"
        assert admin.get("/admin/v1/keys/nosuchkey000").status_code == 404


def test_admin_rejects_bad_key_specs(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        for spec in (
            {"name": "no team"},
            {"team": "t", "name": "n", "budget_usd": "0.0000001"},
            {"team": "t", "name": "n", "rpm": 0},
            {"team": "bad team!", "name": "n"},
        ):
            response = admin.post("/admin/v1/keys", json=spec)
            assert response.status_code == 400, spec
            assert response.json()["error"]["type"] == "invalid_request_error"


def test_price_change_applies_to_the_next_call_and_is_recorded(gateway: Gateway) -> None:
    model = "doubao-seedream-test-price-model"
    key, key_id = gateway.create_key(budget_usd="10", budget_period="total")
    with gateway.admin() as admin:
        assert admin.put(f"/admin/v1/prices/{model}", json={"price_usd": "0.25"}).status_code == 200
        response = generate(gateway, key, model=model, n=2)
        assert response.status_code == 200
        assert Decimal(response.headers["x-gateway-cost-usd"]) == Decimal("0.5")
        prices = admin.get("/admin/v1/prices").json()
        assert {"model": model, "price_usd": "0.250000", "unit": "image"} in prices["data"]
        assert [c for c in prices["history"] if c["model"] == model][-1]["source"] == "admin-api"
        assert admin.put(f"/admin/v1/prices/{model}", json={"price_usd": "abc"}).status_code == 400
        admin.delete(f"/admin/v1/prices/{model}")


def test_cli_keys_work_without_a_gateway(redis_factory) -> None:
    redis = redis_factory()
    created = cli(
        redis.url,
        "keys",
        "create",
        "--team",
        "ml",
        "--name",
        "batch",
        "--budget-usd",
        "3",
        "--budget-period",
        "day",
        "--rpm",
        "10",
        "--models",
        MODEL,
        "--json",
    )
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    key_id = record["key_id"]
    assert record["key"].startswith("sk-gw-") and record["budget_period"] == "day"
    table, usage, missing = run_clis(  # reads, side by side
        redis.url, ["keys", "list"], ["keys", "usage", key_id, "--json"], ["keys", "show", "nosuchkey000"]
    )
    assert key_id in table.stdout and "ml" in table.stdout and record["key"] not in table.stdout
    budget = json.loads(usage.stdout)
    assert budget["budget_usd"] == "3.000000" and budget["spent_usd"] == "0.000000"
    assert missing.returncode == 1 and "no key" in missing.stderr
    updated = json.loads(cli(redis.url, "keys", "update", key_id, "--rpm", "none", "--json").stdout)
    assert updated["rpm"] is None and updated["budget_usd"] == "3.000000"
    rotated = json.loads(cli(redis.url, "keys", "rotate", key_id, "--grace-seconds", "0", "--json").stdout)
    assert rotated["key_id"] == key_id and rotated["key"] != record["key"]
    assert json.loads(cli(redis.url, "keys", "revoke", key_id, "--json").stdout)["status"] == "revoked"


def test_cli_prices(redis_factory) -> None:
    redis = redis_factory()
    listed, bad = run_clis(redis.url, ["prices", "list", "--json"], ["prices", "set", "new-model", "-1"])
    prices = json.loads(listed.stdout)["prices"]
    assert {"model": "doubao-seedream-4-0-250828", "price_usd": "0.162000"} in prices
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1  # refused: it writes nothing
    assert cli(redis.url, "prices", "set", "new-model", "0.5").returncode == 0
    history = json.loads(cli(redis.url, "prices", "list", "--history", "--json").stdout)["history"]
    assert history[-1]["model"] == "new-model" and history[-1]["source"] == "cli"


def test_cli_help_is_useful_on_its_own() -> None:
    commands = [
        ["--help"],
        ["serve", "--help"],
        ["keys", "create", "--help"],
        ["simulate-upstream", "--help"],
        ["prices", "set", "--help"],
    ]
    results = run_together([[sys.executable, "-m", "gateway", *args] for args in commands])
    for result in results:
        assert result.returncode == 0 and "usage: gateway" in result.stdout
    assert "--latency" in results[commands.index(["simulate-upstream", "--help"])].stdout


def _columns(line: str) -> int:
    """Terminal columns a string takes (CJK characters count two)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in line)


def test_cli_says_which_store_it_reads_and_hides_its_password(redis_factory) -> None:
    redis = redis_factory()
    listed, refused = run_together(
        [[sys.executable, "-m", "gateway", "keys", "list"]] * 2,
        envs=[
            {**os.environ, "GATEWAY_REDIS_URL": url}
            for url in (redis.url, redis.url.replace("redis://", "redis://:hunter2@"))
        ],
    )
    assert listed.stderr.strip() == f"gateway: using {redis.url} (GATEWAY_REDIS_URL)"
    assert "hunter2" not in refused.stderr and "redis://:***@127.0.0.1" in refused.stderr


def test_cli_keys_list_shows_every_limit_aligned_for_cjk_names(redis_factory) -> None:
    redis = redis_factory()
    limits = ["--models", MODEL, "--images-per-day", "7", "--max-concurrent", "2"]
    for made in run_clis(  # side by side
        redis.url,
        *(
            ["keys", "create", "--team", "design", "--name", name, *limits]
            for name in ("海报机器人", "poster")
        ),
    ):
        assert made.returncode == 0, made.stderr
    header, *rows = cli(redis.url, "keys", "list").stdout.splitlines()
    for column in ("models", "images_per_day", "max_concurrent"):
        assert column in header
    assert all(MODEL in row and " 7 " in row and " 2 " in row for row in rows)
    status_at = _columns(header[: header.index("status")])
    for row in rows:
        assert _columns(row[: row.index("active")]) == status_at, row


def test_cli_refuses_an_expiry_in_the_past(redis_factory) -> None:
    redis = redis_factory()
    refused = cli(redis.url, "keys", "create", "--team", "t", "--name", "n", "--expires", "2020-01-01")
    assert refused.returncode == 1 and "in the past" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert json.loads(cli(redis.url, "keys", "list", "--json").stdout) == []


def test_cli_help_describes_team_name_and_keeps_the_budget_period_on_update() -> None:
    create, update = (
        " ".join(done.stdout.split())
        for done in run_together(
            [[sys.executable, "-m", "gateway", "keys", command, "--help"] for command in ("create", "update")]
        )
    )
    assert "--team TEAM the team the key bills to" in create and "--name NAME what the key is for" in create
    assert "default month" not in update and "keeps its current period" in update


def test_cli_rotation_message_says_1_second(redis_factory) -> None:
    redis = redis_factory()
    key_id = json.loads(cli(redis.url, "keys", "create", "--team", "t", "--name", "n", "--json").stdout)[
        "key_id"
    ]
    rotated = cli(redis.url, "keys", "rotate", key_id, "--grace-seconds", "1")
    assert "the old one works 1 second more" in rotated.stdout
