"""Closing a month from the console alone, in a real browser (Debian's chromium), at 800 px wide:
a range of days (From, To), a team's page reached by clicking its name (its keys, models and end
users, each downloadable as the ledger's CSV), budgets on a Teams page of their own that say when
they are used up, amounts to the cent with the exact value on hover.

A gateway of its own (own Redis); calls through the official SDK and the simulator; every number
on the pages is compared with the admin API's report and every CSV with the CLI's.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.console_browser import SEEDREAM_40, Console, console_of, month_bounds, sign_in
from tests.support import Simulator, openai_sdk, run_cli

# The fixtures browser and page, on this module's console:
from tests.console_browser import browser_fixture, page_fixture  # noqa: F401  # isort: skip

SEEDREAM_45 = "doubao-seedream-4-5-251128"  # $0.135 an image
SHOTS = Path("/tmp/console-month-end")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Console]:
    with console_of(tmp_path_factory.mktemp("month-end"), simulator.url) as console:
        gw = console.gateway
        poster, _ = gw.create_key(team="design", name="poster-bot")
        banner, _ = gw.create_key(team="design", name="banner-bot")
        gw.create_key(team="legal", name="idle")  # a team with a key and no calls
        gw.set_team("design", budget_usd="10", budget_period="month")
        gw.set_team("tiny", budget_usd="0.20", budget_period="month")
        tiny, _ = gw.create_key(team="tiny", name="one-shot")
        calls = [
            (poster, SEEDREAM_40, 2, "alice@example.com"),
            (poster, SEEDREAM_40, 1, None),
            (banner, SEEDREAM_45, 3, "bob"),
            (banner, SEEDREAM_45, 1, "alice@example.com"),
            (tiny, SEEDREAM_40, 1, None),
        ]
        for key, model, n, user in calls:
            extra = {"user": user} if user is not None else {}
            sdk = openai_sdk(gw.url, key, max_retries=0)
            sdk.images.generate(model=model, prompt="month end", n=n, **extra)
        refused = openai_sdk(gw.url, tiny, max_retries=0)
        with pytest.raises(Exception, match="used up"):  # $0.038 left cannot cover $0.162
            refused.images.generate(model=SEEDREAM_40, prompt="one more")
        yield console


@pytest.fixture(name="narrow")
def narrow_page(page: Page) -> Page:
    """The page at 800 px wide, as finance's laptop shows it side by side with a spreadsheet."""
    page.set_viewport_size({"width": 800, "height": 900})
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def fits(page: Page) -> None:
    """Nothing runs past the right edge: no sideways scrolling at this width."""
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the screen"


def money_cells(page: Page, selector: str) -> list[tuple[str, str]]:
    """(shown, exact) of each amount cell: to the cent, the exact ledger value on hover."""
    cells = page.locator(selector)
    return [(c.inner_text().strip(), c.get_attribute("data-exact") or "") for c in cells.all()]


def cents(exact: str) -> str:
    whole, frac = exact.split(".")
    micros = int(whole) * 1_000_000 + int(frac)
    rounded = (micros + 5_000) // 10_000
    return f"${rounded // 100:,}.{rounded % 100:02d}"


def choose_days(page: Page, start: str, end: str) -> None:
    page.get_by_label("From").fill(start)
    page.get_by_label("From").dispatch_event("change")
    page.get_by_label("To").fill(end)
    page.get_by_label("To").dispatch_event("change")


def test_the_overview_shows_a_range_of_days_to_the_cent_with_the_exact_amount_on_hover(
    narrow: Page, console: Console
) -> None:
    sign_in(narrow, console)
    start, end = month_bounds(console.month)
    expect(narrow.get_by_label("From")).to_have_value(start)
    expect(narrow.get_by_label("To")).to_have_value(end)
    report = console.report("team")
    design = "#spend-table tr[data-team='design'] [data-field='spend_usd']"
    expect(narrow.locator(design)).to_have_attribute("data-exact", "1.026000")  # 3 x 0.162 + 4 x 0.135
    assert narrow.locator(design).inner_text() == "$1.03"
    assert narrow.locator(design).get_attribute("title") == "$1.026000 exactly"
    shown = money_cells(narrow, "#spend-table tbody [data-field='spend_usd']")
    expected = [(cents(r["spend_usd"]), r["spend_usd"]) for r in report["data"]]
    assert shown == [*expected[:1], ("$0.00", "0.000000"), *expected[1:]]  # legal: no calls
    totals = money_cells(narrow, "#spend-table tfoot [data-field='spend_usd']")
    assert totals == [(cents(report["totals"]["spend_usd"]), report["totals"]["spend_usd"])]
    fits(narrow)
    shot(narrow, "overview-800.png")

    choose_days(narrow, "2020-02-01", "2020-02-29")  # nothing then
    expect(narrow.locator(design)).to_have_attribute("data-exact", "0.000000")
    assert narrow.locator("#download-csv").get_attribute("href") == (
        "/console/api/spend.csv?start=2020-02-01&end=2020-02-29"
    )


def test_a_teams_name_opens_its_keys_models_and_users_each_a_csv_of_the_ledger(
    narrow: Page, console: Console
) -> None:
    sign_in(narrow, console)
    narrow.locator("#spend-table").get_by_role("link", name="design").click()
    expect(narrow).to_have_url(console.gateway.url + "/console/#team/design")
    expect(narrow.get_by_role("heading", name="Team design")).to_be_visible()
    start, end = month_bounds(console.month)
    report = {
        table: [r for r in console.report(f"team,{group}")["data"] if r["team"] == "design"]
        for table, group in (("keys", "key"), ("models", "model"), ("users", "user"))
    }
    expect(narrow.locator("#team-users tbody tr")).to_have_count(len(report["users"]))
    for table, rows in report.items():
        spend = money_cells(narrow, f"#team-{table} tbody [data-field='spend_usd']")
        assert spend == [(cents(r["spend_usd"]), r["spend_usd"]) for r in rows], table
        total = money_cells(narrow, f"#team-{table} tfoot [data-field='spend_usd']")
        assert total == [("$1.03", "1.026000")], table  # every table adds up to the team's spend
    users = narrow.locator("#team-users tbody tr td:first-child").all_inner_texts()
    assert users == [r["user"] or "(none)" for r in report["users"]]
    assert "(none)" in users and "alice@example.com" in users
    fits(narrow)
    shot(narrow, "team-800.png")

    for table, group in (("keys", "key"), ("models", "model"), ("users", "user")):
        with narrow.expect_download() as download:
            narrow.get_by_role("link", name=f"Download {table} CSV").click()
        got = Path(download.value.path()).read_text()
        cli = run_cli(
            console.redis.url, "report", "spend", "--start", start, "--end", end,
            "--team", "design", "--group-by", f"team,{group}", "--format", "csv",
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert got == cli.stdout, table
        assert download.value.suggested_filename == f"design-{table}-{start}-{end}.csv"
        rows = list(csv.DictReader(io.StringIO(got)))
        assert rows[-1]["team"] == "TOTAL" and rows[-1]["spend_usd"] == "1.026000"


def test_the_teams_page_shows_each_budget_now_and_a_used_up_one_as_exhausted(
    narrow: Page, console: Console
) -> None:
    sign_in(narrow, console)
    narrow.get_by_role("navigation").get_by_role("link", name="Teams").click()
    tiny = "#team-table tr[data-team='tiny']"
    expect(narrow.locator(f"{tiny} [data-field='exhausted']")).to_have_text("exhausted")
    assert narrow.locator(f"{tiny} [data-field='budget_use']").inner_text().startswith("81.0%")
    with console.admin() as admin:
        usage = admin.get("/admin/v1/teams/tiny/usage").json()
    assert usage["exhausted"] is True
    assert money_cells(narrow, f"{tiny} [data-field='remaining_usd']") == [("$0.04", usage["remaining_usd"])]
    design = "#team-table tr[data-team='design']"
    assert narrow.locator(f"{design} [data-field='exhausted']").count() == 0
    assert narrow.locator(f"{design} [data-field='budget_use']").inner_text().startswith("10.3%")
    fits(narrow)
    shot(narrow, "teams-800.png")


def test_a_refused_budget_form_error_goes_away_when_the_page_moves_on(narrow: Page, console: Console) -> None:
    sign_in(narrow, console)
    narrow.get_by_role("navigation").get_by_role("link", name="Teams").click()
    form = narrow.locator("#team-form")
    form.get_by_label("Team").fill("design")
    form.get_by_label("Budget (USD)").fill("$1,000")
    form.get_by_role("button", name="Save team").click()
    problem = narrow.locator("#team-form-error")
    expect(problem).to_contain_text("'$1,000' is not a plain decimal number of US dollars")
    narrow.get_by_role("navigation").get_by_role("link", name="Overview").click()
    choose_days(narrow, "2020-01-01", "2020-01-31")
    narrow.get_by_role("navigation").get_by_role("link", name="Teams").click()
    expect(narrow.locator("#team-table tr[data-team='design']")).to_be_visible()
    expect(problem).to_be_hidden()
    console.errors[:] = [e for e in console.errors if "400" not in e]  # the refused save itself


def test_chart_colours_stay_with_their_team_when_another_team_appears(narrow: Page, console: Console) -> None:
    sign_in(narrow, console)

    def colours() -> dict[str, str]:
        swatches = narrow.locator("#chart figcaption span")
        return {
            s.inner_text().strip(): s.locator("i").evaluate("i => i.style.background") for s in swatches.all()
        }

    expect(narrow.locator("#chart figcaption span")).to_have_count(2)  # design and tiny spent
    both = colours()
    with console.admin() as admin:  # only tiny has calls of its own key through the SDK today
        admin.put("/admin/v1/teams/aardvark", json={"budget_usd": "1"})  # a team sorted first
    key, _ = console.gateway.create_key(team="aardvark", name="new")
    openai_sdk(console.gateway.url, key, max_retries=0).images.generate(model=SEEDREAM_45, prompt="x")
    narrow.reload()
    expect(narrow.locator("#chart figcaption span")).to_have_count(3)
    after = colours()
    assert {team: after[team] for team in both} == both
    assert after["aardvark"] not in both.values() or len(set(after.values())) < 3


def test_a_range_over_two_months_is_charted_per_month(narrow: Page, console: Console) -> None:
    """A year per day was a point per team and day (3 MB at 100 teams): past 62 days, per month."""
    sign_in(narrow, console)
    year, month = int(console.month[:4]), int(console.month[5:])
    first = f"{year - 1}-{month:02d}-01"  # a year back, to the end of this month
    end = month_bounds(console.month)[1]
    choose_days(narrow, first, end)
    expect(narrow.get_by_label("From")).to_have_value(first)
    titles = narrow.locator("#chart svg rect title")
    expect(titles.first).to_have_text(re.compile(r"^\d{4}-\d{2} · "))  # the new range's chart, per month
    assert sorted(titles.all_text_contents()) == sorted(
        f"{console.month} · {r['team']}: ${r['spend_usd']}" for r in console.report("team")["data"]
    )
    labels = narrow.locator("#chart svg text.axis").all_text_contents()
    assert console.month in labels and f"{year - 1}-{month:02d}" in labels
    fits(narrow)
