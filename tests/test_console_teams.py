"""Team budgets in the console: set, seen with their use, refused, cleared; in a real browser.

A gateway of its own with two teams; calls are made with the team's keys through the official SDK
(the simulator upstream), and every number on the page is compared with ``GET
/admin/v1/teams/{team}/usage``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console_browser import SEEDREAM_40, Console, cell, console_of, generate, sign_in
from tests.support import ADMIN_TOKEN, TLS, Simulator

# The fixtures browser and page, on this module's console:
from tests.console_browser import browser_fixture, page_fixture  # noqa: F401  # isort: skip

STUDIO = "#team-table tr[data-team='studio']"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Console]:
    with console_of(tmp_path_factory.mktemp("console-teams"), simulator.url) as console:
        console.gateway.create_key(team="ops", name="ops-bot")
        yield console


def team(console: Console, name: str) -> dict[str, object]:
    with console.admin() as admin:
        response = admin.get(f"/admin/v1/teams/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_set_a_team_budget_see_its_use_be_refused_and_clear_it(
    page: Page, console: Console, tmp_path: Path
) -> None:
    gw = console.gateway
    poster, _ = gw.create_key(team="studio", name="poster-bot")
    batch, _ = gw.create_key(team="studio", name="batch", budget_usd="5", budget_period="month")
    sign_in(page, console)
    page.get_by_role("navigation").get_by_role("link", name="Teams").click()
    expect(page.locator(f"{STUDIO} [data-field='budget_usd']")).to_have_text("—")
    assert cell(page, STUDIO, "budget_use") == "no budget"  # the key's own 5 is not the team's

    form = page.locator("#team-form")
    form.get_by_label("Team").fill("studio")
    form.get_by_label("Budget (USD)").fill("2.00")
    form.get_by_label("Budget period").select_option("month")
    form.get_by_label("Alert thresholds").fill("0.5, 0.8, 1")
    form.get_by_role("button", name="Save team").click()
    done = page.locator("#team-form-done")
    expect(done).to_contain_text("Saved studio: budget 2.000000 / month.")
    expect(done).to_contain_text("GATEWAY_ALERT_WEBHOOK_URL is not set")  # this gateway has none
    expect(page.locator(f"{STUDIO} [data-field='budget_usd']")).to_have_text("$2.00 / month")
    saved = team(console, "studio")
    assert [saved[f] for f in ("budget_usd", "budget_period", "images_per_day", "alert_thresholds")] == [
        "2.000000",
        "month",
        None,
        [0.5, 0.8, 1.0],
    ]

    generate(gw, poster, SEEDREAM_40, 1)  # 0.162, through the official SDK and the simulator
    generate(gw, batch, SEEDREAM_40, 2)  # 0.324: the team's two keys share its budget
    page.reload()
    expect(page.locator(f"{STUDIO} [data-field='period_spent_usd']")).to_have_text("$0.49")
    usage = gw.team_usage("studio")
    numbers = [usage[f] for f in ("budget_usd", "spent_usd", "remaining_usd")]
    assert numbers == ["2.000000", "0.486000", "1.514000"]

    def exact(name: str) -> str | None:
        return page.locator(f"{STUDIO} [data-field='{name}']").get_attribute("data-exact")

    assert exact("period_spent_usd") == usage["spent_usd"]
    assert exact("reserved_usd") == usage["reserved_usd"] == "0.000000"
    assert exact("remaining_usd") == usage["remaining_usd"]
    assert cell(page, STUDIO, "budget_use") == "24.3%"  # 0.486 of 2
    assert page.locator(f"{STUDIO} [data-field='budget_use']").get_attribute("title") == (
        "Resets " + usage["resets_at"].replace("T", " ").replace("Z", " UTC")
    )

    # A bad value: the gateway's 400 names the field, the page shows it, nothing changes.
    page.locator(STUDIO).get_by_role("button", name="Edit").click()
    expect(form.get_by_label("Team")).to_have_value("studio")
    expect(form.get_by_label("Budget (USD)")).to_have_value("2.000000")
    expect(form.get_by_label("Alert thresholds")).to_have_value("0.5, 0.8, 1")
    form.get_by_label("Budget (USD)").fill("-1")
    form.get_by_role("button", name="Save team").click()
    problem = page.locator("#team-form-error")
    expect(problem).to_have_text("budget_usd: Input should be greater than or equal to 0")
    assert team(console, "studio")["budget_usd"] == "2.000000"
    page.screenshot(path=str(tmp_path / "console-team-budgets.png"), full_page=True)
    form.get_by_label("Budget (USD)").fill("1.0000001")
    form.get_by_role("button", name="Save team").click()
    expect(problem).to_contain_text("budget_usd: Value error, USD amounts have at most six decimals")

    # Clearing: an empty budget field is null, which clears the budget (the rest is kept as shown).
    form.get_by_label("Budget (USD)").fill("")
    form.get_by_role("button", name="Save team").click()
    expect(page.locator("#team-form-done")).to_contain_text("Saved studio: no budget.")
    expect(problem).to_be_hidden()
    expect(page.locator(f"{STUDIO} [data-field='budget_usd']")).to_have_text("—")
    assert cell(page, STUDIO, "budget_use") == "no budget"
    assert cell(page, STUDIO, "remaining_usd") == "—"
    cleared = team(console, "studio")
    assert (cleared["budget_usd"], cleared["alert_thresholds"]) == (None, [0.5, 0.8, 1.0])
    assert gw.team_usage("studio")["budget_usd"] is None

    audited = [json.loads(line) for line in gw.log().splitlines() if '"audit":"team.set"' in line]
    assert [(a["team"], a["via"], a["client"]) for a in audited] == [("studio", "console", "127.0.0.1")] * 2
    assert audited[0]["fields"] == ["alert_thresholds", "budget_period", "budget_usd", "images_per_day"]
    console.errors[:] = [e for e in console.errors if "400" not in e]  # the two refused saves themselves


def test_setting_a_team_needs_the_session_its_csrf_token_and_our_origin(console: Console) -> None:
    url = console.gateway.url + "/console/api/teams/csrf-team"
    spec = {"budget_usd": "3", "budget_period": "day"}
    assert httpx.put(url, json=spec, verify=TLS).json()["error"]["code"] == "console_session_required"

    signed = httpx.post(console.gateway.url + "/console/api/session", json={"token": ADMIN_TOKEN}, verify=TLS)
    cookies, csrf = {"gw_console": signed.cookies["gw_console"]}, signed.json()["csrf_token"]
    for headers in (
        {},
        {"X-CSRF-Token": "forged"},
        {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        {"X-CSRF-Token": csrf, "Origin": console.gateway.url.replace("127.0.0.1", "localhost")},
    ):
        refused = httpx.put(url, json=spec, cookies=cookies, headers=headers, verify=TLS)
        assert refused.status_code == 403, headers
        assert refused.json()["error"]["code"] == "csrf_failed"
    with console.admin() as admin:
        assert admin.get("/admin/v1/teams/csrf-team").status_code == 404  # nothing was written

    own = {"X-CSRF-Token": csrf, "Origin": console.gateway.url}
    made = httpx.put(url, json=spec, cookies=cookies, headers=own, verify=TLS)
    assert made.status_code == 200, made.text
    assert (made.json()["budget_usd"], made.json()["budget_period"]) == ("3.000000", "day")
    assert _error(httpx.put(url, json={"budget_usd": "x"}, cookies=cookies, headers=own, verify=TLS)) == (
        400,
        "budget_usd",
        "Value error, 'x' is not a plain decimal number of US dollars such as 1000 or 0.135 "
        "(no '$', no thousands separators)",
    )
    assert _error(httpx.put(url, json={"colour": "red"}, cookies=cookies, headers=own, verify=TLS))[:2] == (
        400,
        "colour",
    )
    bad_name = httpx.put(
        url.replace("csrf-team", "no%20spaces"), json=spec, cookies=cookies, headers=own, verify=TLS
    )
    assert (bad_name.status_code, bad_name.json()["error"]["param"]) == (400, "team")
    form = httpx.put(
        url, data={"budget_usd": "1"}, cookies=cookies, headers=own, verify=TLS
    )  # a cross-site form's body
    assert form.status_code == 400
    cleared = httpx.put(url, json={"budget_usd": None}, cookies=cookies, headers=own, verify=TLS)
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
