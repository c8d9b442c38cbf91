"""OpenAI's ``user`` field, for spend per end user: validated like any other field,
forwarded to the upstream as sent, recorded in the ledger and carried by the exports, never a
metric label nor in the access log.

Real parts: redis-server, the simulator over HTTP, the gateway process, the official ``openai``
package as the client.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import orjson
import pytest

from tests.support import MODEL, Gateway, Simulator, generate, openai_sdk, wait_until


def _days() -> tuple[str, str]:
    now = datetime.now(UTC).date()  # yesterday to tomorrow: a run across midnight still finds it
    return (now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()


def export(gateway: Gateway, key_id: str, fmt: str) -> list[dict[str, Any]]:
    """The key's records in the admin export: JSON lines as parsed, CSV rows as strings."""
    start, end = _days()
    with gateway.admin() as admin:
        response = admin.get("/admin/v1/usage", params={"start": start, "end": end, "format": fmt})
    assert response.status_code == 200, response.text
    if fmt == "jsonl":
        rows: list[dict[str, Any]] = [orjson.loads(line) for line in response.text.splitlines()]
    else:
        rows = list(csv.DictReader(io.StringIO(response.text)))
        columns = list(rows[0])
        assert columns[columns.index("over_budget") + 1] == "user", "columns added later come after the rest"
    return [row for row in rows if row["key_id"] == key_id]


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai_sdk(gateway.url, key, max_retries=0)


def forwarded_bodies(simulator: Simulator, marker: str) -> list[dict[str, Any]]:
    bodies = (base64.b64decode(r["body_b64"]) for r in simulator.requests())
    return [json.loads(body) for body in bodies if marker.encode() in body]


def assert_not_in_metrics_or_access_log(gateway: Gateway, user: str) -> None:
    assert user not in gateway.metrics(), "the end user must not be a metric label"
    assert user not in gateway.log(), "the end user is not logged"


def test_a_call_with_a_user_is_forwarded_and_exported_in_jsonl_and_csv(
    gateway: Gateway, simulator: Simulator
) -> None:
    key, key_id = gateway.create_key(team="end-users")
    user = f"alice-{key_id}@example.com"
    prompt = f"a fox for {key_id}"
    image = sdk(gateway, key).images.generate(model=MODEL, prompt=prompt, user=user)
    assert image.data and image.data[0].url
    (sent,) = forwarded_bodies(simulator, prompt)
    assert sent["user"] == user, "the upstream gets the field as the caller sent it"
    (record,) = export(gateway, key_id, "jsonl")
    assert record["user"] == user and record["outcome"] == "ok"
    (row,) = export(gateway, key_id, "csv")
    assert row["user"] == user and row["request_id"] == record["request_id"]
    assert_not_in_metrics_or_access_log(gateway, user)


def test_without_a_user_or_with_an_empty_one_the_user_is_empty(
    gateway: Gateway, simulator: Simulator
) -> None:
    key, key_id = gateway.create_key(team="end-users")
    client = sdk(gateway, key)
    client.images.generate(model=MODEL, prompt=f"no user {key_id}")
    client.images.generate(model=MODEL, prompt=f"empty user {key_id}", user="")  # OpenAI accepts ""
    client.images.generate(model=MODEL, prompt=f"null user {key_id}", extra_body={"user": None})
    assert forwarded_bodies(simulator, f"empty user {key_id}")[0]["user"] == ""  # still forwarded
    records = export(gateway, key_id, "jsonl")
    assert [r["user"] for r in records] == ["", "", ""]
    assert [r["outcome"] for r in records] == ["ok", "ok", "ok"]
    assert [row["user"] for row in export(gateway, key_id, "csv")] == ["", "", ""]


def test_a_user_that_looks_like_a_formula_is_text_in_csv_and_unchanged_in_jsonl(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(team="end-users")
    client = sdk(gateway, key)
    users = ["=cmd()", "+1-800", "@SUM(A1)", '用户 42 ✓, "quoted"']
    for user in users:
        client.images.generate(model=MODEL, prompt="x", user=user)
    assert [r["user"] for r in export(gateway, key_id, "jsonl")] == users
    cells = [row["user"] for row in export(gateway, key_id, "csv")]
    assert cells == ["'=cmd()", "'+1-800", "'@SUM(A1)", '用户 42 ✓, "quoted"']


BAD_USERS = {
    "257 characters": "u" * 257,
    "a newline": "alice\n",
    "a NUL": "al\x00ice",
    "a unit separator": "al\x1fice",
    "a C1 control": "al\x85ice",
    "DEL": "al\x7fice",
    "a number": 5,
    "a list": ["alice"],
    "an object": {"id": "alice"},
    "true": True,
}


@pytest.mark.parametrize("user", BAD_USERS.values(), ids=BAD_USERS.keys())
def test_a_bad_user_is_a_400_naming_user_with_nothing_charged(
    gateway: Gateway, simulator: Simulator, user: Any
) -> None:
    key, key_id = gateway.create_key(team="end-users", budget_usd="1", budget_period="total")
    before = simulator.count()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, key).images.generate(model=MODEL, prompt="x", extra_body={"user": user})
    assert caught.value.body["param"] == "user"
    assert caught.value.body["type"] == "invalid_request_error"
    assert simulator.count() == before, "a bad user must not reach the upstream"
    assert gateway.usage(key_id)["spent_usd"] in ("0", "0.000000")
    assert export(gateway, key_id, "jsonl") == []


def test_256_characters_and_unicode_are_accepted(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(team="end-users")
    longest = "é" * 256  # characters, not bytes: 512 bytes of UTF-8
    response = generate(gateway, key, user=longest)
    assert response.status_code == 200, response.text
    assert [r["user"] for r in export(gateway, key_id, "jsonl")] == [longest]


def test_a_streamed_call_records_its_user(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(team="end-users")
    user = f"streamer-{key_id}"
    events = sdk(gateway, key).images.generate(
        model=MODEL,
        prompt="a red fox",
        stream=True,
        user=user,
        extra_body={
            "sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 2},
            "simulator_fault": "stream_gap=0",
        },
    )
    assert [event.type for event in events][-1] == "image_generation.completed"
    records = wait_until(lambda: export(gateway, key_id, "jsonl"), what="the stream's record")
    assert [(r["user"], r["stream"], r["images"]) for r in records] == [(user, 1, 2)]
    assert [row["user"] for row in export(gateway, key_id, "csv")] == [user]
    assert_not_in_metrics_or_access_log(gateway, user)


def test_a_large_answer_streamed_to_the_caller_records_its_user(gateway: Gateway) -> None:
    key, key_id = gateway.create_key(team="end-users")
    user = f"big-{key_id}"
    raw = sdk(gateway, key).images.with_raw_response.generate(
        model=MODEL,
        prompt="big",
        response_format="b64_json",
        user=user,
        extra_body={"simulator_fault": "image_bytes=2000000"},  # past the 1 MiB read whole
    )
    assert "x-gateway-cost-usd" not in raw.headers, "not relayed: the test would miss its path"
    assert len(raw.parse().data) == 1
    records = wait_until(lambda: export(gateway, key_id, "jsonl"), what="the answer's record")
    assert [(r["user"], r["images"], r["outcome"]) for r in records] == [(user, 1, "ok")]


def test_a_report_grouped_by_user_splits_a_teams_spend_per_end_user(gateway: Gateway) -> None:
    """Per end user, alone and with team, key and model; calls that named no user are one row."""
    team = f"users-{secrets.token_hex(4)}"
    key, key_id = gateway.create_key(team=team, name="serves-users")
    other, other_id = gateway.create_key(team=team, name="also")
    calls = [(key, "alice@example.com", 2), (key, "alice@example.com", 1), (key, "bob|pipe\u00e9", 1)]
    calls += [(key, None, 1), (other, "alice@example.com", 1)]
    for secret, user, n in calls:
        body: dict[str, Any] = {"n": n}
        if user is not None:
            body["user"] = user
        assert generate(gateway, secret, **body).status_code == 200
    start, end = _days()

    def rows(group_by: str) -> list[dict[str, Any]]:
        with gateway.admin() as admin:
            response = admin.get(
                "/admin/v1/reports/spend", params={"start": start, "end": end, "group_by": group_by}
            )
        assert response.status_code == 200, response.text
        return [r for r in response.json()["data"] if r.get("team", team) == team]

    by_user = {
        (r["team"], r["user"]): (r["calls"], r["images"], r["spend_micros"]) for r in rows("team,user")
    }
    price = 135_000
    assert by_user == {
        (team, "alice@example.com"): (3, 4, 4 * price),
        (team, "bob|pipe\u00e9"): (1, 1, price),
        (team, ""): (1, 1, price),
    }
    by_key_user = {(r["key_id"], r["user"]): r["images"] for r in rows("team,key,model,user")}
    assert by_key_user == {
        (key_id, "alice@example.com"): 3,
        (key_id, "bob|pipe\u00e9"): 1,
        (key_id, ""): 1,
        (other_id, "alice@example.com"): 1,
    }
    assert sum(r["spend_micros"] for r in rows("team,user")) == 6 * price == rows("team")[0]["spend_micros"]
