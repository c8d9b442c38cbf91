"""The console with two upstream channels, in a real browser at 800 px wide: cost and margin
beside spend in every table, a table per channel on the overview and on a team's page, a margin
below zero shown as one, and each table's CSV exactly the CLI's report.

Two stand-in upstreams over real HTTP: ``cheap`` serves Seedream 4.5 at $0.100 an image (the price
is $0.135), ``dear`` serves Seedream 4.0 at $0.170 (the price is $0.162: it loses $0.008 an image).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.channel_upstreams import StandIn, channel, channels_file, images, key_env
from tests.console_browser import SEEDREAM_40, Console, console_of, generate, month_bounds, sign_in
from tests.support import run_cli

# The fixtures browser and page, on this module's console:
from tests.console_browser import browser_fixture, page_fixture  # noqa: F401  # isort: skip

SEEDREAM_45 = "doubao-seedream-4-5-251128"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    base = tmp_path_factory.mktemp("console-channels")
    upstreams = {"cheap": StandIn().start(), "dear": StandIn().start()}
    for name, upstream in upstreams.items():
        upstream.reset(images(2 if name == "cheap" else 1, name))
    path = channels_file(
        base,
        channel("cheap", upstreams["cheap"], models=[SEEDREAM_45], cost_usd={SEEDREAM_45: "0.100"}),
        channel("dear", upstreams["dear"], models=[SEEDREAM_40], cost_usd={SEEDREAM_40: "0.170"}),
    )
    env = {"GATEWAY_CHANNELS_FILE": str(path), **key_env(dict(upstreams))}
    try:
        with console_of(base, upstreams["cheap"].url, **env) as console:
            key, _ = console.gateway.create_key(team="studio", name="poster")
            generate(console.gateway, key, SEEDREAM_45, 2)  # cheap: 2 x ($0.135 - $0.100)
            generate(console.gateway, key, SEEDREAM_40, 1)  # dear: $0.162 - $0.170
            yield console
    finally:
        for upstream in upstreams.values():
            upstream.stop()


def amounts(page: Page, row: str) -> dict[str, str]:
    """The exact amounts of a table row, by field."""
    return {
        field: page.locator(f"{row} [data-field='{field}']").get_attribute("data-exact") or ""
        for field in ("spend_usd", "cost_usd", "margin_usd")
    }


def csv_of(page: Page, link: str) -> str:
    with page.expect_download() as download:
        page.get_by_role("link", name=link).click()
    return Path(download.value.path()).read_text()


def cli_csv(console: Console, *args: str) -> str:
    start, end = month_bounds(console.month)
    done = run_cli(
        console.redis.url, "report", "spend", "--start", start, "--end", end, *args, "--format", "csv"
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_overview_shows_cost_and_margin_per_team_and_per_channel(page: Page, console: Console) -> None:
    page.set_viewport_size({"width": 800, "height": 900})
    sign_in(page, console)
    studio = "#spend-table tr[data-team='studio']"
    expect(page.locator(f"{studio} [data-field='margin_usd']")).to_have_attribute("data-exact", "0.062000")
    assert amounts(page, studio) == {
        "spend_usd": "0.432000",
        "cost_usd": "0.370000",
        "margin_usd": "0.062000",
    }
    assert amounts(page, "#channel-table tr[data-channel='cheap']") == {
        "spend_usd": "0.270000",
        "cost_usd": "0.200000",
        "margin_usd": "0.070000",
    }
    dear = "#channel-table tr[data-channel='dear'] [data-field='margin_usd']"
    assert page.locator(dear).get_attribute("data-exact") == "-0.008000"
    assert page.locator(dear).inner_text() == "-$0.01"
    assert "negative" in (page.locator(dear).get_attribute("class") or "")
    assert amounts(page, "#channel-table tfoot tr") == amounts(page, "#spend-table tfoot tr")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the overview fits 800 px"
    page.screenshot(path="/tmp/console-channels-overview-800.png", full_page=True)
    assert csv_of(page, "Download channels CSV") == cli_csv(console, "--group-by", "channel")


def test_a_teams_page_has_a_table_per_channel_and_each_table_its_cost_and_margin(
    page: Page, console: Console
) -> None:
    page.set_viewport_size({"width": 800, "height": 900})
    sign_in(page, console)
    page.locator("#spend-table").get_by_role("link", name="studio").click()
    expect(page.locator("#team-channels tbody tr")).to_have_count(2)
    assert page.locator("#team-channels tbody tr td:first-child").all_inner_texts() == ["cheap", "dear"]
    for table in ("keys", "models", "users", "channels"):
        assert amounts(page, f"#team-{table} tfoot tr") == {
            "spend_usd": "0.432000",
            "cost_usd": "0.370000",
            "margin_usd": "0.062000",
        }, table
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "a team's page fits 800 px"
    page.screenshot(path="/tmp/console-channels-team-800.png", full_page=True)
    got = csv_of(page, "Download channels CSV")
    assert got == cli_csv(console, "--team", "studio", "--group-by", "team,channel")
    assert got.splitlines()[0] == "team,channel,calls,images,spend_usd,succeeded,failed,cost_usd,margin_usd"
