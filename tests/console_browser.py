"""What the console's browser tests share: a gateway of the module's own, Debian's chromium driven
by Playwright, a page that records every request and script error, signing in, reading a table cell.

A test module defines its ``console`` fixture with ``console_of`` and imports the fixtures
``browser_fixture`` and ``page_fixture`` (pytest knows them as ``browser`` and ``page``).

Nothing is skipped: without chromium, importing this module fails the test module with the
command that installs it.
"""

from __future__ import annotations

import calendar
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ADMIN_TOKEN, Gateway, RedisServer, gateway_env, openai_sdk

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.fail(
        "The console tests need Debian's chromium. Install it with: sudo apt-get install -y chromium",
        pytrace=False,
    )

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

SEEDREAM_40 = "doubao-seedream-4-0-250828"  # 0.162 a image: three make 0.486


@dataclass
class Console:
    gateway: Gateway
    redis: RedisServer
    month: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def admin(self) -> httpx.Client:
        return self.gateway.admin()

    def report(self, group_by: str) -> dict[str, Any]:
        start, end = month_bounds(self.month)
        with self.admin() as admin:
            response = admin.get(
                "/admin/v1/reports/spend", params={"start": start, "end": end, "group_by": group_by}
            )
        assert response.status_code == 200, response.text
        return dict(response.json())


@contextmanager
def console_of(directory: Path, upstream_url: str, **env: str) -> Iterator[Console]:
    """A Redis and a gateway of their own under ``directory`` (with the settings ``env``), shown
    for the current month."""
    redis = RedisServer(directory / "redis").start()
    settings = gateway_env(redis.url, upstream_url, directory / "state", **env)
    gateway = Gateway(settings, directory / "gateway.log")
    try:
        yield Console(gateway.start(), redis, datetime.now(UTC).strftime("%Y-%m"))
    finally:
        gateway.stop()
        redis.stop()


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """One chromium for the test module."""
    with launch_browser() as launched:
        yield launched


@pytest.fixture(name="page")
def page_fixture(browser: Browser, console: Console) -> Iterator[Page]:
    """A fresh page on the module's ``console`` (checked on the way out, see ``open_page``)."""
    with open_page(browser, console) as tab:
        yield tab


def month_bounds(month: str) -> tuple[str, str]:
    year, number = int(month[:4]), int(month[5:])
    return f"{month}-01", f"{month}-{calendar.monthrange(year, number)[1]:02d}"


def generate(gw: Gateway, key: str, model: str, n: int) -> None:
    client = openai_sdk(gw.url, key, max_retries=0)
    result = client.images.generate(model=model, prompt="a console test", n=n)
    assert result.data is not None and len(result.data) == n


@contextmanager
def launch_browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@contextmanager
def open_page(browser: Browser, console: Console) -> Iterator[Page]:
    """A fresh browser context; every request it makes and every error it sees is recorded, and
    on the way out none may have left the gateway's origin and no error may be left over."""
    context: BrowserContext = browser.new_context(viewport={"width": 1366, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.gateway.url)
    tab = context.new_page()
    tab.on("request", lambda request: console.requests.append(request.url))
    tab.on("pageerror", lambda error: console.errors.append(f"pageerror: {error}"))
    tab.on(
        "console", lambda msg: console.errors.append(f"console: {msg.text}") if msg.type == "error" else None
    )
    yield tab
    context.close()
    leaving = [url for url in console.requests if not url.startswith(console.gateway.url + "/")]
    assert not leaving, f"requests left the gateway's origin: {leaving}"
    assert not console.errors, console.errors
    console.requests.clear()


def sign_in(page: Page, console: Console) -> None:
    page.goto(console.gateway.url + "/console/")
    expect(page).to_have_url(console.gateway.url + "/console/login")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(console.gateway.url + "/console/")
    expect(page.locator("#spend-table tbody tr").first).to_be_visible()


def cell(page: Page, row: str, name: str) -> str:
    return page.locator(f"{row} [data-field='{name}']").inner_text().strip()
