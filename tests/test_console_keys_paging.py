"""10,000 keys: the console's Keys page and ``GET /admin/v1/keys`` answer a page at a time, sorted by
team and name, searchable, each page a few tens of KB (the whole list was 3-4.5 MB). Times are
for ``python -m bench.console_pages``; this checks what a page holds and how paging walks.

A gateway of its own on a Redis seeded with 10,000 key records (as KeyStore.create writes them),
then Debian's chromium at 800 px.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from gateway.store.keyspace import KEY_REGISTRY, TEAM_REGISTRY, KeySpace, TeamSpace, directory_entry
from tests.console_browser import Console, console_of, sign_in
from tests.support import Simulator

# The fixtures browser and page, on this module's console:
from tests.console_browser import browser_fixture, page_fixture  # noqa: F401  # isort: skip

KEYS = 10_000
TEAMS = [f"bulk-{i:02d}" for i in range(25)]
WORDS = ["poster", "banner", "batch", "Report", "thumb", "Ad", "hero", "icon"]


def seed_keys(redis: Any) -> list[tuple[str, str, str]]:
    """10,000 keys over 25 teams with names in no order; (team, name, key_id) of each."""
    rng = random.Random(10_000)
    keys = []
    with redis.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(KEYS):
            key_id = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(12))
            team, name = rng.choice(TEAMS), f"{rng.choice(WORDS)}-{rng.randrange(1000)}"
            record = {"key_id": key_id, "team": team, "name": name, "last4": "abcd", "created_at": i,
                      "revoked_at": 0, "budget_micros": -1, "budget_period": "month"}  # fmt: skip
            pipe.hset(KeySpace(key_id, team).record, mapping=record)
            pipe.hset(directory_entry(key_id), "team", team)
            pipe.sadd(TeamSpace(team).keys, key_id)
            pipe.sadd(KEY_REGISTRY, key_id)
            keys.append((team, name, key_id))
        pipe.sadd(TEAM_REGISTRY, *TEAMS)
        pipe.execute()
    return sorted(keys, key=lambda k: (k[0], k[1].lower(), k[1], k[2]))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[tuple[Console, list]]:
    with console_of(tmp_path_factory.mktemp("paging"), simulator.url) as console:
        yield console, seed_keys(console.redis)


@pytest.fixture(scope="module")
def console(seeded: tuple[Console, list]) -> Console:
    return seeded[0]


def test_the_admin_key_list_is_paged_by_team_and_name_and_searched(seeded: tuple[Console, list]) -> None:
    console, keys = seeded
    with console.admin() as admin:
        first = admin.get("/admin/v1/keys")
        body = first.json()
        assert (body["total"], body["page"], body["per_page"], body["has_more"]) == (KEYS, 1, 100, True)
        assert [(k["team"], k["name"], k["key_id"]) for k in body["data"]] == keys[:100]
        assert len(first.content) < 60_000, len(first.content)  # the whole list was 3 MB
        walked = []
        for page in range(1, 12):
            data = admin.get("/admin/v1/keys", params={"page": page, "per_page": 1000}).json()
            walked += [k["key_id"] for k in data["data"]]
            if not data["has_more"]:
                break
        assert walked == [k for _, _, k in keys] and page == 10
        found = admin.get("/admin/v1/keys", params={"q": "REPORT-1", "team": "bulk-03"}).json()
        expected = [k for t, n, k in keys if t == "bulk-03" and "report-1" in n.lower()]
        assert [k["key_id"] for k in found["data"]] == expected and found["total"] == len(expected)
        assert admin.get("/admin/v1/keys", params={"per_page": 1001}).status_code == 400


def test_the_keys_page_walks_10000_keys_fifty_at_a_time_at_800_px(
    page: Page, seeded: tuple[Console, list]
) -> None:
    console, keys = seeded
    page.set_viewport_size({"width": 800, "height": 900})
    sign_in(page, console)
    answers: list[int] = []
    page.on("response", lambda r: answers.append(len(r.body())) if "/console/api/keys" in r.url else None)
    page.get_by_role("navigation").get_by_role("link", name="Keys").click()
    shown = page.locator("#keys-shown")
    expect(shown).to_have_text("1–50 of 10,000")
    rows = page.locator("#keys-table tbody tr")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.keyId)") == [k for _, _, k in keys[:50]]
    page.get_by_role("button", name="Next").click()
    expect(shown).to_have_text("51–100 of 10,000")
    assert rows.first.get_attribute("data-key-id") == keys[50][2]
    page.get_by_label("Search").fill(keys[1234][2])  # a key_id, whole
    expect(shown).to_have_text("1–1 of 1")
    assert rows.first.get_attribute("data-key-id") == keys[1234][2]
    page.get_by_label("Search").fill("hero-7")
    expected = [k for _, n, k in keys if "hero-7" in n.lower()]
    expect(shown).to_have_text(f"1–{min(50, len(expected))} of {len(expected)}")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    page.screenshot(path="/tmp/console-month-end/keys-800.png", full_page=False)
    assert answers and max(answers) < 40_000, answers  # the whole list with usage was 4.5 MB
