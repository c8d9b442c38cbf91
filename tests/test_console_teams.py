"""Team budgets in the console (issue 14): ``PUT /console/api/teams/{team}``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.console_browser import Console
from tests.support import ADMIN_TOKEN, Gateway, RedisServer, Simulator, gateway_env


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Console]:
    base = tmp_path_factory.mktemp("console-teams")
    redis = RedisServer(base / "redis").start()
    gw = Gateway(gateway_env(redis.url, simulator.url, base / "state"), base / "gateway.log").start()
    gw.create_key(team="ops", name="ops-bot")
    yield Console(gw, redis, datetime.now(UTC).strftime("%Y-%m"))
    gw.stop()
    redis.stop()


def test_setting_a_team_needs_the_session_its_csrf_token_and_our_origin(console: Console) -> None:
    url = console.gateway.url + "/console/api/teams/csrf-team"
    spec = {"budget_usd": "3", "budget_period": "day"}
    assert httpx.put(url, json=spec).json()["error"]["code"] == "console_session_required"

    signed = httpx.post(console.gateway.url + "/console/api/session", json={"token": ADMIN_TOKEN})
    cookies, csrf = {"gw_console": signed.cookies["gw_console"]}, signed.json()["csrf_token"]
    for headers in (
        {},
        {"X-CSRF-Token": "forged"},
        {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        {"X-CSRF-Token": csrf, "Origin": console.gateway.url.replace("127.0.0.1", "localhost")},
    ):
        refused = httpx.put(url, json=spec, cookies=cookies, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.json()["error"]["code"] == "csrf_failed"
    with console.admin() as admin:
        assert admin.get("/admin/v1/teams/csrf-team").status_code == 404  # nothing was written

    own = {"X-CSRF-Token": csrf, "Origin": console.gateway.url}
    made = httpx.put(url, json=spec, cookies=cookies, headers=own)
    assert made.status_code == 200, made.text
    assert (made.json()["budget_usd"], made.json()["budget_period"]) == ("3.000000", "day")
    assert _error(httpx.put(url, json={"budget_usd": "x"}, cookies=cookies, headers=own)) == (
        400,
        "budget_usd",
        "Input should be a valid decimal",
    )
    assert _error(httpx.put(url, json={"colour": "red"}, cookies=cookies, headers=own))[:2] == (400, "colour")
    bad_name = httpx.put(url.replace("csrf-team", "no%20spaces"), json=spec, cookies=cookies, headers=own)
    assert (bad_name.status_code, bad_name.json()["error"]["param"]) == (400, "team")
    form = httpx.put(url, data={"budget_usd": "1"}, cookies=cookies, headers=own)  # a cross-site form's body
    assert form.status_code == 400
    cleared = httpx.put(url, json={"budget_usd": None}, cookies=cookies, headers=own)
    assert cleared.status_code == 200 and cleared.json()["budget_usd"] is None
    assert console.gateway.team_usage("csrf-team")["budget_usd"] is None
    log = console.gateway.log().splitlines()
    audited = [json.loads(line) for line in log if '"audit":"team.set"' in line and '"csrf-team"' in line]
    assert [(a["via"], a["fields"]) for a in audited] == [  # refused calls change and audit nothing
        ("console", ["budget_period", "budget_usd"]),
        ("console", ["budget_usd"]),
    ]


def _error(response: httpx.Response) -> tuple[int, str | None, str]:
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return response.status_code, error["param"], error["message"]

