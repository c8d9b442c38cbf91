"""Admin input is strict: a name is checked whole, and a field the API does not know is refused.

A team name with a trailing newline once passed the name rule (``$`` matches before a final
newline) and made a look-alike team with a budget of its own; a misspelled field on a key was
silently dropped, so ``"budget": "10"`` made a key with no budget at all. Every admin body now
refuses a field it does not know, with a 400 whose ``param`` names it, and nothing is written.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from gateway.admin.keys import parse_token
from gateway.admin.teams import check_team_name
from gateway.call.validate import validate_image_request
from gateway.core.errors import GatewayError
from tests.support import ADMIN_TOKEN, ROOT, TLS, Gateway, RedisServer, run_cli


def refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


def teams_named(admin: httpx.Client, name: str) -> list[str]:
    """Every team whose name holds ``name`` (look-alikes included)."""
    return [t["team"] for t in admin.get("/admin/v1/teams").json()["data"] if name in t["team"]]


@pytest.mark.parametrize("lookalike", ["design-nl\n", "design-nl\r\n", "design-nl\t", " design-nl"])
def test_a_team_name_with_a_trailing_newline_is_refused_everywhere(
    gateway: Gateway, redis_server: RedisServer, lookalike: str
) -> None:
    with gateway.admin() as admin:
        set_team = admin.put(f"/admin/v1/teams/{quote(lookalike, safe='')}", json={"budget_usd": "1000"})
        assert (set_team.status_code, set_team.json()["error"]["code"]) == (400, "invalid_team")
        key = admin.post("/admin/v1/keys", json={"team": lookalike, "name": "lookalike"})
        refused(key, "team")
        assert teams_named(admin, "design-nl") == []
    cli = run_cli(redis_server.url, "teams", "set", lookalike, "--budget-usd", "1000")
    assert cli.returncode != 0 and "team" in cli.stderr
    with gateway.admin() as admin:
        assert teams_named(admin, "design-nl") == []


def test_names_and_tokens_are_checked_as_whole_strings() -> None:
    assert check_team_name("design") == "design"
    for name in ("design\n", "design\r", "design\x00", "x" * 65):
        with pytest.raises(ValueError):
            check_team_name(name)
    token = "sk-gw-abcdefghijkl_" + "A" * 43
    assert parse_token(token) is not None
    assert parse_token(token + "\n") is None


def test_a_size_with_a_trailing_newline_is_refused() -> None:
    assert validate_image_request({"model": "m", "prompt": "p", "size": "1024x1024"}, 100).n == 1
    with pytest.raises(GatewayError) as refusal:
        validate_image_request({"model": "m", "prompt": "p", "size": "1024x1024\n"}, 100)
    assert refusal.value.param == "size"


MISSPELLED_KEY = {"team": "strict-keys", "name": "typo", "budget": "10"}


def test_a_misspelled_budget_on_a_new_key_is_refused_not_ignored(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        refused(admin.post("/admin/v1/keys", json=MISSPELLED_KEY), "budget")
        assert admin.get("/admin/v1/keys", params={"team": "strict-keys"}).json()["data"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("PATCH", "/admin/v1/keys/{key_id}", {"budget": "10"}, "budget"),
        ("PATCH", "/admin/v1/keys/{key_id}", {"rpm": 5, "max_concurent": 1}, "max_concurent"),
        ("POST", "/admin/v1/keys/{key_id}/rotate", {"grace": 5}, "grace"),
        ("PUT", "/admin/v1/teams/strict-keys", {"budget": "10"}, "budget"),
        ("PUT", "/admin/v1/prices/strict-model", {"price_usd": "1", "currency": "EUR"}, "currency"),
    ],
)
def test_every_admin_body_refuses_a_field_it_does_not_know(
    gateway: Gateway, method: str, path: str, body: dict[str, Any], param: str
) -> None:
    _, key_id = gateway.create_key(team="strict-keys", budget_usd="5")
    before = gateway.usage(key_id)
    with gateway.admin() as admin:
        refused(admin.request(method, path.format(key_id=key_id), json=body), param)
        assert "strict-model" not in str(admin.get("/admin/v1/prices").json()["data"])
        shown = admin.get(f"/admin/v1/keys/{key_id}").json()
    assert (shown["budget_usd"], shown["rpm"], shown["max_concurrent"]) == ("5.000000", None, None)
    assert gateway.usage(key_id)["budget_usd"] == before["budget_usd"]


def test_the_console_refuses_a_field_it_does_not_know(gateway: Gateway) -> None:
    base = gateway.url + "/console/api"
    signed = httpx.post(base + "/session", json={"token": ADMIN_TOKEN}, verify=TLS)
    assert signed.status_code == 200
    session = {
        "cookies": {"gw_console": signed.cookies["gw_console"]},
        "headers": {"X-CSRF-Token": signed.json()["csrf_token"], "Origin": gateway.url},
        "verify": TLS,
    }
    spec = {**MISSPELLED_KEY, "team": "strict-console"}
    refused(httpx.post(base + "/keys", json=spec, **session), "budget")  # type: ignore[arg-type]
    refused(httpx.put(base + "/teams/strict-console", json={"budget": "1"}, **session), "budget")  # type: ignore[arg-type]
    with gateway.admin() as admin:
        assert admin.get("/admin/v1/keys", params={"team": "strict-console"}).json()["data"] == []
        assert admin.get("/admin/v1/teams/strict-console").status_code == 404


def test_no_pattern_in_the_gateway_relies_on_dollar_to_end_a_name() -> None:
    """A pattern anchored ``^...$`` is meant to match a whole string, which ``re.match`` does not
    do (``$`` matches before a final newline): such patterns are written unanchored and used with
    ``fullmatch``. Pydantic's ``pattern=`` is left out: its engine has no such ``$``."""
    anchored = re.compile(r"""re\.compile\(r?["']\^.*\$["']""")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "gateway").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if anchored.search(line)
    ]
    assert not found, found


@pytest.mark.parametrize(
    "body",
    [
        {"name": "alice@example.com\n", "role": "admin"},
        {"name": "ci-reports\r\n", "role": "finance"},
        {"name": "lead", "role": "team-admin", "teams": ["design\n"]},
    ],
    ids=["name-lf", "name-crlf", "team-lf"],
)
def test_a_credential_name_or_team_with_a_trailing_newline_is_refused(
    gateway: Gateway, body: dict[str, Any]
) -> None:
    with gateway.admin() as admin:
        refused = admin.post("/admin/v1/access", json=body)
        assert refused.status_code == 400, refused.text
        names = [c["name"] for c in admin.get("/admin/v1/access").json()["data"]]
    assert body["name"] not in names
