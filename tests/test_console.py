"""The console in a real browser: Debian's chromium driven by Playwright.

A gateway of its own (own Redis: the overview's "every team" is what this module put there), some
traffic through the official SDK, then the pages are read and every number is compared with the
admin API. Nothing is skipped: without chromium the module fails with the command that installs it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AuthenticationError
from playwright.sync_api import Page, expect

from tests.console_browser import SEEDREAM_40, Console, cell, console_of, generate, month_bounds, sign_in
from tests.support import ADMIN_TOKEN, TLS, Simulator, run_cli

# The fixtures browser and page, on this module's console:
from tests.console_browser import browser_fixture, page_fixture  # noqa: F401  # isort: skip

SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Console]:
    with console_of(tmp_path_factory.mktemp("console"), simulator.url) as console:
        gw = console.gateway
        design, _ = gw.create_key(team="design", name="poster-bot", budget_usd="5", budget_period="month")
        design2, _ = gw.create_key(team="design", name="banner-bot", budget_usd="2.5", budget_period="month")
        finance, _ = gw.create_key(team="finance", name="report-art")
        gw.set_team("design", budget_usd="10", budget_period="month")  # finance has no team budget
        for _ in range(3):
            generate(gw, design, SEEDREAM_40, 1)  # 3 x 0.162 = 0.486
        generate(gw, design2, "doubao-seedream-4-5-251128", 2)
        generate(gw, finance, "doubao-seedream-4-5-251128", 1)
        yield console


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


# -- sign-in ---------------------------------------------------------------------------------------


def test_wrong_token_shows_an_error_and_sets_nothing(page: Page, console: Console) -> None:
    page.goto(console.gateway.url + "/console/login")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong admin token.")
    assert page.context.cookies() == []
    assert page.url == console.gateway.url + "/console/login"
    console.errors[:] = [e for e in console.errors if "401" not in e]  # the refused sign-in itself


def test_sign_in_sets_a_session_cookie_that_is_not_the_token(page: Page, console: Console) -> None:
    signed_in_at = time.time()
    sign_in(page, console)
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "gw_console" and ADMIN_TOKEN not in cookie["value"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http here; https is checked below
    assert cookie["path"] == "/console"
    assert abs(cookie["expires"] - (signed_in_at + 8 * 3600)) < 60
    assert page.evaluate("document.cookie") == ""  # not readable by scripts


# -- overview --------------------------------------------------------------------------------------


def exact(page: Page, row: str, name: str) -> str:
    """An amount cell's exact value (shown to the cent; the ledger's value on hover)."""
    return page.locator(f"{row} [data-field='{name}']").get_attribute("data-exact") or "—"


def test_overview_shows_exactly_what_the_admin_api_reports(page: Page, console: Console) -> None:
    sign_in(page, console)
    expect(page.get_by_label("From")).to_have_value(f"{console.month}-01")
    report = console.report("team")
    assert [r["team"] for r in report["data"]] == ["design", "finance"]
    with console.admin() as admin:
        teams = [t["team"] for t in admin.get("/admin/v1/teams").json()["data"]]
        usages = {t: admin.get(f"/admin/v1/teams/{t}/usage").json() for t in teams}
    rows = page.locator("#spend-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.team)")
    assert rows == teams  # every team, with spend or not
    for row in report["data"]:
        selector = f"#spend-table tr[data-team='{row['team']}']"
        assert cell(page, selector, "calls") == str(row["calls"])
        assert cell(page, selector, "images") == str(row["images"])
        assert exact(page, selector, "spend_usd") == row["spend_usd"]
    totals = "#spend-table tr[data-team='TOTAL']"
    assert exact(page, totals, "spend_usd") == report["totals"]["spend_usd"] == "0.891000"
    assert cell(page, totals, "spend_usd") == "$0.89"
    assert cell(page, totals, "images") == str(report["totals"]["images"]) == "6"
    # The chart: one bar per team and day, each labelled with the exact amount of the report.
    daily = console.report("team,day")["data"]
    titles = sorted(page.locator("#chart svg rect title").all_text_contents())
    assert titles == sorted(f"{r['day']} · {r['team']}: ${r['spend_usd']}" for r in daily)
    expect(page.locator("#chart figcaption")).to_contain_text("design")
    screenshot(page, "console-overview.png")

    # Each team's budget now (GET /admin/v1/teams/{team}/usage), on the Teams page.
    page.get_by_role("navigation").get_by_role("link", name="Teams").click()
    expect(page.locator("#team-table tbody tr")).to_have_count(len(teams))
    for team, usage in usages.items():
        selector = f"#team-table tr[data-team='{team}']"
        assert exact(page, selector, "budget_usd") == (usage["budget_usd"] or "—")
        assert exact(page, selector, "period_spent_usd") == usage["spent_usd"]
        assert exact(page, selector, "reserved_usd") == usage["reserved_usd"]
        assert exact(page, selector, "remaining_usd") == (usage["remaining_usd"] or "—")
    design, finance = "#team-table tr[data-team='design']", "#team-table tr[data-team='finance']"
    assert cell(page, design, "budget_usd") == "$10.00 / month"  # the team's, not its keys' 7.5
    assert exact(page, design, "remaining_usd") == "9.244000"
    assert cell(page, design, "budget_use") == "7.6%"  # 0.756 of 10
    assert cell(page, finance, "budget_use") == "no budget"


def test_design_spent_exactly_0_486_on_seedream_4_0(console: Console) -> None:
    """The amount the issue names, as the ledger holds it (not rounded to cents anywhere)."""
    rows = console.report("team,model")["data"]
    assert {"team": "design", "model": SEEDREAM_40, "spend_usd": "0.486000"}.items() <= next(
        r for r in rows if r["model"] == SEEDREAM_40
    ).items()


def test_download_csv_is_the_cli_report(page: Page, console: Console) -> None:
    sign_in(page, console)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    downloaded = Path(download.value.path()).read_text()
    start, end = month_bounds(console.month)
    cli = run_cli(console.redis.url, "report", "spend", "--start", start, "--end", end, "--format", "csv")
    assert cli.returncode == 0, cli.stderr
    assert downloaded == cli.stdout
    assert "0.891000" in downloaded
    assert download.value.suggested_filename == f"spend-{start}-{end}.csv"


def test_another_month_is_another_report(page: Page, console: Console) -> None:
    sign_in(page, console)
    page.get_by_label("From").fill("2020-02-01")
    page.get_by_label("From").dispatch_event("change")  # To follows to the end of that month
    expect(page.get_by_label("To")).to_have_value("2020-02-29")
    # Nothing was spent then; the teams are still listed.
    design, finance = "#spend-table tr[data-team='design']", "#spend-table tr[data-team='finance']"
    expect(page.locator(f"{design} [data-field='spend_usd']")).to_have_text("$0.00")
    assert exact(page, finance, "spend_usd") == "0.000000"
    assert exact(page, "#spend-table tr[data-team='TOTAL']", "spend_usd") == "0.000000"
    assert page.locator("#download-csv").get_attribute("href") == (
        "/console/api/spend.csv?start=2020-02-01&end=2020-02-29"
    )


# -- keys ------------------------------------------------------------------------------------------


def test_create_use_rotate_and_revoke_a_key_from_the_page(page: Page, console: Console) -> None:
    sign_in(page, console)
    page.get_by_role("link", name="Keys").click()
    team = f"web-{secrets.token_hex(2)}"
    form = page.locator("#create-form")  # the overview's team form has a "Team" and a "Budget (USD)" too
    form.get_by_label("Team", exact=True).fill(team)
    form.get_by_label("Name", exact=True).fill("made in the console")
    form.get_by_label("Budget (USD)").fill("1.5")
    form.get_by_label("Requests per minute").fill("30")
    form.get_by_role("button", name="Create key").click()
    secret_box = page.locator("#secret-value")
    expect(secret_box).to_contain_text("sk-gw-")
    secret = secret_box.inner_text().strip()
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    key_id = secret[len("sk-gw-") :].split("_")[0]
    row = f"#keys-table tr[data-key-id='{key_id}']"
    expect(page.locator(row)).to_contain_text(team)
    screenshot(page, "console-keys.png")

    with console.admin() as admin:
        record = admin.get(f"/admin/v1/keys/{key_id}").json()
    assert (record["team"], record["name"], record["budget_usd"], record["budget_period"], record["rpm"]) == (
        team,
        "made in the console",
        "1.500000",
        "month",
        30,
    )
    generate(console.gateway, secret, SEEDREAM_40, 1)  # the key works, through the official SDK
    page.reload()
    assert exact(page, row, "spent_usd") == console.gateway.usage(key_id)["spent_usd"]
    assert cell(page, row, "spent_usd") == "$0.16 / month"
    assert cell(page, row, "budget_usd") == "$1.50 / month"
    assert secret not in page.content()  # shown once, never again

    page.locator("#team-filter").select_option(team)
    expect(page.locator("#keys-table tbody tr")).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(row).get_by_role("button", name="Rotate").click()
    expect(secret_box).to_contain_text(f"sk-gw-{key_id}_")
    rotated = secret_box.inner_text().strip()
    assert rotated != secret
    generate(console.gateway, rotated, SEEDREAM_40, 1)

    page.once("dialog", lambda dialog: dialog.dismiss())  # a change of mind revokes nothing
    page.locator(row).get_by_role("button", name="Revoke").click()
    expect(page.locator(f"{row} [data-field='status']")).to_have_text("active")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(row).get_by_role("button", name="Revoke").click()
    expect(page.locator(f"{row} [data-field='status']")).to_have_text("revoked")
    for key in (secret, rotated):
        with pytest.raises(AuthenticationError):
            generate(console.gateway, key, SEEDREAM_40, 1)
    log = console.gateway.log().splitlines()
    audited = [json.loads(line) for line in log if '"audit"' in line and f'"key_id":"{key_id}"' in line]
    assert [a["audit"] for a in audited] == ["key.create", "key.rotate", "key.revoke"]
    assert all(a["via"] == "console" and a["client"] == "127.0.0.1" for a in audited)
    audited_text = "\n".join(line for line in log if '"audit"' in line)
    assert secret not in audited_text and rotated not in audited_text and ADMIN_TOKEN not in audited_text


# -- sign-out, sessions, cross-site requests -------------------------------------------------------


def test_sign_out_ends_the_session_everywhere(page: Page, console: Console) -> None:
    sign_in(page, console)
    (cookie,) = page.context.cookies()
    stolen = {"gw_console": cookie["value"]}
    url = console.gateway.url + "/console/api/overview"
    assert httpx.get(url, cookies=stolen, verify=TLS).status_code == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(console.gateway.url + "/console/login")
    assert page.context.cookies() == []
    refused = httpx.get(url, cookies=stolen, verify=TLS)  # the old cookie is dead on the server too
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "console_session_required"


def _cookie_of(response: httpx.Response) -> dict[str, str]:
    return {"gw_console": response.cookies["gw_console"]}


def test_data_calls_need_a_session_and_changes_a_csrf_token(console: Console) -> None:
    base = console.gateway.url + "/console/api"
    for method, path in [
        ("GET", "/overview"),
        ("GET", "/spend.csv"),
        ("GET", "/keys"),
        ("GET", "/session"),
        ("POST", "/keys"),
        ("POST", "/keys/abcdefghijkl/revoke"),
        ("POST", "/keys/abcdefghijkl/rotate"),
        ("PUT", "/teams/design"),
        ("DELETE", "/session"),
    ]:
        response = httpx.request(method, base + path, json={}, verify=TLS)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "console_session_required"

    signed = httpx.post(base + "/session", json={"token": ADMIN_TOKEN}, verify=TLS)
    assert signed.status_code == 200
    cookies, csrf = _cookie_of(signed), signed.json()["csrf_token"]
    spec = {"team": "csrf", "name": "should-not-exist"}
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}):
        refused = httpx.post(base + "/keys", json=spec, cookies=cookies, headers=headers, verify=TLS)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    with console.admin() as admin:
        assert not admin.get("/admin/v1/keys", params={"team": "csrf"}).json()["data"]
    made = httpx.post(base + "/keys", json=spec, cookies=cookies, headers={"X-CSRF-Token": csrf}, verify=TLS)
    assert made.status_code == 201 and made.json()["key"].startswith("sk-gw-")
    form = httpx.post(base + "/session", data={"token": ADMIN_TOKEN}, verify=TLS)  # a cross-site form's body
    assert form.status_code == 400 and "gw_console" not in form.cookies


def test_cookie_is_secure_when_a_trusted_proxy_says_https(console: Console) -> None:
    """Behind a TLS-terminating proxy (trusted, here 127.0.0.1) the cookie gets ``Secure``."""
    response = httpx.post(
        console.gateway.url + "/console/api/session",
        json={"token": ADMIN_TOKEN},
        headers={"X-Forwarded-Proto": "https"},
        verify=TLS,
    )
    assert response.status_code == 200
    set_cookie = response.headers["set-cookie"].lower()
    assert "secure" in set_cookie and "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert "max-age=28800" in set_cookie


def test_wrong_sign_in_tokens_are_slowed_like_admin_tokens(console: Console) -> None:
    address = f"203.0.113.{secrets.randbelow(250) + 1}"
    url = console.gateway.url + "/console/api/session"
    headers = {"X-Forwarded-For": address}
    for _ in range(10):
        assert httpx.post(url, json={"token": "guess"}, headers=headers, verify=TLS).status_code == 401
    blocked = httpx.post(url, json={"token": ADMIN_TOKEN}, headers=headers, verify=TLS)
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert "gw_console" not in blocked.cookies
    admin = httpx.get(
        console.gateway.url + "/admin/v1/keys",
        headers={**headers, "Authorization": f"Bearer {ADMIN_TOKEN}"},
        verify=TLS,
    )
    assert admin.status_code == 429  # one limiter for the API and the console
