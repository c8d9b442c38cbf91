"""Console single sign-on against a real OpenID provider (panva's oidc-provider on Node), in a real
browser (Debian's chromium driven by Playwright).

The provider's development login form takes any password; a person's name, email and groups come
from a file the test rewrites (tests/oidc_provider.py). The gateway has a Redis of its own, so the
audit trail read back is this module's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.console_browser import SEEDREAM_40, generate, launch_browser
from tests.oidc_provider import OpenIdProvider
from tests.support import ADMIN_TOKEN, TLS, Gateway, RedisServer, Simulator, gateway_env

SCREENSHOTS = Path("/tmp")
PEOPLE = {
    "ada": {"name": "Ada Lovelace", "email": "ada@example.com", "groups": ["gateway-admin", "staff"]},
    "fin": {"name": "Fiona Finch", "email": "fiona@example.com", "groups": ["gateway-finance"]},
    "tom": {"name": "Tom Lead", "email": "tom@example.com", "groups": ["staff", "gateway-team-admin:design"]},
    "eve": {"name": "Eve Outsider", "email": "eve@example.com", "groups": ["staff"]},
}


@dataclass
class Sso:
    gateway: Gateway
    provider: OpenIdProvider
    redis: RedisServer
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url

    def audit(self, **match: Any) -> list[dict[str, Any]]:
        with self.gateway.admin() as admin:
            entries = admin.get("/admin/v1/audit", params={"limit": 1000}).json()["data"]
        return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


@contextmanager
def sso_of(directory: Path, upstream_url: str, forged: bool = False) -> Iterator[Sso]:
    """A Redis, a gateway and an OpenID provider that knows the gateway's callback, all their own."""
    redis = RedisServer(directory / "redis").start()
    gateway = Gateway(gateway_env(redis.url, upstream_url, directory / "state"), directory / "gateway.log")
    provider = OpenIdProvider(gateway.url, directory / "oidc", forged=forged).start()
    provider.people(PEOPLE)
    gateway.env.update(provider.gateway_env())
    try:
        yield Sso(gateway.start(), provider, redis)
    finally:
        gateway.stop()
        provider.stop()
        redis.stop()


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Sso]:
    with sso_of(tmp_path_factory.mktemp("sso"), simulator.url) as found:
        gw = found.gateway
        design, _ = gw.create_key(team="design", name="poster-bot")
        research, _ = gw.create_key(team="research", name="paper-figures")
        generate(gw, design, SEEDREAM_40, 1)
        generate(gw, research, SEEDREAM_40, 2)
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_browser() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, sso: Sso) -> Iterator[Page]:
    """A fresh browser (no cookies: nobody signed in, at the gateway or the provider)."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    tab = context.new_page()
    tab.on("pageerror", lambda error: sso.errors.append(f"pageerror: {error}"))
    yield tab
    context.close()
    assert not sso.errors, sso.errors


def through_provider(page: Page, login: str, held: list[str] | None = None) -> None:
    """From the gateway's sign-in page through the provider's login form (and its consent page, when
    it asks), until the browser is back at the gateway (or, ``held``, its callback was held)."""
    gateway_url = page.url.split("/console/")[0]
    page.get_by_role("link", name="Sign in with SSO").click()
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.locator("button[type=submit]").click()
    wait_back(page, gateway_url, held, 1)


def wait_back(page: Page, gateway_url: str, held: list[str] | None, count: int) -> None:
    """Playwright runs the page's events only inside its own calls: poll with its clock."""
    consented = False
    for _ in range(300):
        if held is not None and len(held) >= count:
            return
        if held is None and page.url.startswith(gateway_url):
            return
        on_consent = "/interaction/" in page.url and page.locator("input[name=login]").count() == 0
        if on_consent and not consented and page.locator("button[type=submit]").count() == 1:
            page.locator("button[type=submit]").click()
            consented = True
        page.wait_for_timeout(50)
    raise AssertionError(f"never back at the gateway: {page.url}")


def sign_in_as(page: Page, sso: Sso, login: str) -> None:
    page.goto(sso.url + "/console/login")
    through_provider(page, login)
    expect(page).to_have_url(sso.url + "/console/")
    expect(page.locator("#session-who")).to_have_text(f"{PEOPLE[login]['name']} <{PEOPLE[login]['email']}>")


@contextmanager
def held_callback(page: Page, sso: Sso) -> Iterator[list[str]]:
    """Stops the browser at the provider's redirect back to the gateway, keeping the callback URL.

    Playwright routes only the first request of a redirect chain, so the provider's form posts
    are routed and their redirects followed here (with the browser's cookies): a redirect to the
    callback is held instead of followed."""
    held: list[str] = []
    callback = sso.url + "/console/oidc/callback"

    def hold(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        answer = route.fetch(max_redirects=0)
        for _ in range(10):
            location = urljoin(answer.url, answer.headers.get("location", ""))
            if location.startswith(callback):
                held.append(location)
                route.fulfill(status=204, body="")
                return
            if answer.status not in (302, 303) or not location.startswith(sso.provider.issuer):
                break
            answer = page.context.request.get(location, max_redirects=0)
        route.fulfill(response=answer)

    pattern = re.compile(re.escape(sso.provider.issuer) + "/.*")
    page.route(pattern, hold)
    try:
        yield held
    finally:
        page.unroute(pattern)


def callback_with(url: str, **replace: str) -> str:
    query = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    return url.split("?")[0] + "?" + urlencode({**query, **replace})


def expect_failure(page: Page, why: str) -> None:
    expect(page.locator("#sso-page h1")).to_have_text("Sign-in failed")
    expect(page.locator("#sso-page")).to_contain_text(why)
    assert not [c for c in page.context.cookies() if c["name"] == "gw_console"]


# -- signing in ------------------------------------------------------------------------------------


def test_the_sign_in_page_offers_sso_beside_the_token_form(page: Page, sso: Sso) -> None:
    page.goto(sso.url + "/console/login")
    expect(page.get_by_role("link", name="Sign in with SSO")).to_be_visible()
    expect(page.get_by_label("Admin token")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "console-sso-sign-in.png"), full_page=True)


def test_an_admin_signs_in_with_sso_and_the_console_names_them(page: Page, sso: Sso) -> None:
    sign_in_as(page, sso, "ada")
    expect(page.locator("#session-role")).to_have_text("admin")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "gw_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert not [c for c in page.context.cookies() if c["name"] == "gw_oidc"]  # the flow's cookie is spent
    expect(page.locator("#spend-table tr[data-team='research']")).to_be_visible()
    expect(page.locator("#create-key")).to_be_hidden()  # on the keys page
    page.goto(sso.url + "/console/#keys")
    expect(page.locator("#create-key")).to_be_visible()
    (entry, *_) = sso.audit(action="console.sign_in", actor="ada@example.com")
    assert entry["via"] == "console" and entry["target"] == {"method": "sso", "role": "admin", "teams": None}
    log = sso.gateway.log()
    assert sso.provider.client_secret not in log and ADMIN_TOKEN not in log


def test_finance_signed_in_with_sso_sees_every_team_and_no_create_key(page: Page, sso: Sso) -> None:
    sign_in_as(page, sso, "fin")
    expect(page.locator("#session-role")).to_have_text("finance")
    expect(page.locator("#spend-table tr[data-team='design']")).to_be_visible()
    expect(page.locator("#spend-table tr[data-team='research']")).to_be_visible()
    page.goto(sso.url + "/console/#teams")
    expect(page.locator("#team-table tr[data-team='design']")).to_be_visible()
    expect(page.locator("#team-table tr[data-team='research']")).to_be_visible()
    expect(page.locator("#set-team")).to_be_visible()  # finance sets team budgets
    page.goto(sso.url + "/console/#keys")
    expect(page.locator("#keys-table tbody tr")).to_have_count(2)
    expect(page.locator("#create-key")).to_be_hidden()
    expect(page.get_by_role("button", name="Create key")).to_be_hidden()
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    # And the gateway refuses it whatever the page shows:
    refused = page.evaluate(
        """async () => {
            const session = await (await fetch("/console/api/session")).json();
            const response = await fetch("/console/api/keys", {method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf_token},
                body: JSON.stringify({team: "design", name: "sneaky"})});
            return [response.status, (await response.json()).error.message];
        }"""
    )
    needs = "Issuing and changing keys needs the role admin or team-admin"
    assert refused == [403, f"{needs}; this credential has the role finance."]


def test_a_team_admin_signed_in_with_sso_sees_only_their_team(page: Page, sso: Sso) -> None:
    sign_in_as(page, sso, "tom")
    expect(page.locator("#session-role")).to_have_text("team-admin of design")
    rows = page.locator("#spend-table tbody tr")
    expect(rows).to_have_count(1)
    page.screenshot(path=str(SCREENSHOTS / "console-sso-team-admin.png"), full_page=True)
    expect(page.locator("#spend-table tr[data-team='design']")).to_be_visible()
    page.goto(sso.url + "/console/#teams")
    expect(page.locator("#team-table tbody tr")).to_have_count(1)
    expect(page.locator("#team-table tr[data-team='design']")).to_be_visible()
    expect(page.locator("#set-team")).to_be_hidden()
    # Another team's page and its CSVs do not exist for them; their own team's do.
    statuses = page.evaluate(
        """async () => Promise.all(["design/report", "research/report", "research/keys.csv"].map(
            async (path) => (await fetch("/console/api/teams/" + path)).status))"""
    )
    assert statuses == [200, 404, 404]
    page.goto(sso.url + "/console/#keys")
    expect(page.locator("#keys-table tbody tr")).to_have_count(1)
    expect(page.locator("#keys-table tbody")).to_contain_text("poster-bot")
    expect(page.locator("#team-filter option")).to_have_text(["All teams", "design"])
    page.locator("#new-team").fill("design")
    page.locator("#new-name").fill("tom-bot")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#secret-panel")).to_be_visible()
    (entry, *_) = sso.audit(action="key.create", actor="tom@example.com")
    assert entry["via"] == "console" and entry["target"]["team"] == "design"


def test_someone_in_no_gateway_group_is_told_they_have_no_access(page: Page, sso: Sso) -> None:
    page.goto(sso.url + "/console/login")
    through_provider(page, "eve")
    expect(page.locator("#sso-page h1")).to_have_text("No access")
    expect(page.locator("#sso-page")).to_contain_text("Eve Outsider <eve@example.com>")
    groups = "gateway-admin, gateway-finance or gateway-team-admin:<team>"
    expect(page.locator("#sso-page")).to_contain_text(groups)
    page.screenshot(path=str(SCREENSHOTS / "console-sso-no-access.png"), full_page=True)
    assert not [c for c in page.context.cookies() if c["name"] == "gw_console"]
    page.goto(sso.url + "/console/")
    expect(page).to_have_url(sso.url + "/console/login")
    assert sso.audit(action="console.sso_no_access", actor="eve@example.com")


def test_a_person_whose_groups_change_gets_the_new_role_at_the_next_sign_in(
    browser: Browser, sso: Sso
) -> None:
    login = "changer-" + secrets.token_hex(3)
    person = {"name": "Chris Change", "email": f"{login}@example.com"}
    PEOPLE[login] = {**person, "groups": ["gateway-finance"]}
    roles = []
    try:
        for groups in (["gateway-finance"], ["gateway-team-admin:design", "gateway-team-admin:research"], []):
            PEOPLE[login]["groups"] = groups
            sso.provider.people(PEOPLE)
            context = browser.new_context()
            tab = context.new_page()
            tab.goto(sso.url + "/console/login")
            through_provider(tab, login)
            if groups:
                expect(tab).to_have_url(sso.url + "/console/")
                expect(tab.locator("#session-role")).to_have_text(re.compile(".+"))
                roles.append(tab.locator("#session-role").inner_text())
            else:
                expect(tab.locator("#sso-page h1")).to_have_text("No access")
                roles.append("no access")
            context.close()
    finally:
        del PEOPLE[login]
        sso.provider.people(PEOPLE)
    assert roles == ["finance", "team-admin of design, research", "no access"]


# -- what is refused -------------------------------------------------------------------------------


def test_a_wrong_state_signs_nobody_in_and_the_right_one_works_once(page: Page, sso: Sso) -> None:
    page.goto(sso.url + "/console/login")
    with held_callback(page, sso) as held:
        through_provider(page, "ada", held)
    (callback,) = held
    page.goto(callback_with(callback, state=secrets.token_urlsafe(32)))
    expect_failure(page, "not valid here")
    page.goto(callback)  # the genuine answer still works: the wrong state did not use it up
    expect(page).to_have_url(sso.url + "/console/")
    page.goto("about:blank")  # the console's page would go to the sign-in page once its cookie is gone
    page.context.clear_cookies()
    page.goto(callback)  # but only once
    expect_failure(page, "used already")


def test_a_callback_from_another_browser_signs_nobody_in(browser: Browser, page: Page, sso: Sso) -> None:
    """A victim sent the attacker's callback link: the flow's cookie is not in the victim's browser."""
    page.goto(sso.url + "/console/login")
    with held_callback(page, sso) as held:
        through_provider(page, "ada", held)
    (callback,) = held
    other = browser.new_context()
    victim = other.new_page()
    victim.goto(callback)
    expect_failure(victim, "not started in this browser")
    other.close()


def test_a_code_is_good_once_at_the_provider(page: Page, sso: Sso) -> None:
    page.goto(sso.url + "/console/login")
    with held_callback(page, sso) as held:
        through_provider(page, "ada", held)
    (first,) = held
    page.goto(first)
    expect(page).to_have_url(sso.url + "/console/")
    page.goto("about:blank")  # the console's page would go to the sign-in page once its cookie is gone
    page.context.clear_cookies(name="gw_console")
    # A new sign-in of this browser (its state and flow cookie), answered with the spent code:
    started = page.context.request.get(sso.url + "/console/oidc/login", max_redirects=0)
    assert started.status == 303
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    used_code = parse_qs(urlsplit(first).query)["code"][0]
    page.goto(callback_with(first, state=state, code=used_code))
    expect_failure(page, "The identity provider refused: invalid_grant.")


def test_an_expired_id_token_is_refused(page: Page, sso: Sso) -> None:
    sso.provider.clock_behind(2 * 3600)  # its ID tokens (one hour) expired an hour ago
    try:
        page.goto(sso.url + "/console/login")
        through_provider(page, "ada")
        expect_failure(page, "The ID token has expired.")
    finally:
        sso.provider.clock_behind(0)


def test_an_id_token_signed_with_a_key_the_provider_does_not_publish_is_refused(
    tmp_path: Path, simulator: Simulator, browser: Browser
) -> None:
    with sso_of(tmp_path, simulator.url, forged=True) as forged:
        context = browser.new_context()
        tab = context.new_page()
        tab.goto(forged.url + "/console/login")
        through_provider(tab, "ada")
        expect_failure(tab, "The ID token's signature does not verify.")
        context.close()


def test_new_provider_keys_are_fetched_when_an_unknown_key_id_arrives(browser: Browser, sso: Sso) -> None:
    def sign_in() -> None:
        context = browser.new_context()
        tab = context.new_page()
        sign_in_as(tab, sso, "ada")
        context.close()

    sign_in()  # the provider's keys are cached now
    before = sso.provider.key_id()
    sso.provider.rotate_keys()
    assert sso.provider.key_id() != before
    sign_in()


def test_failed_callbacks_count_towards_the_guessing_block(sso: Sso) -> None:
    address = f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    headers = {"X-Forwarded-For": address}
    url = sso.url + "/console/oidc/callback"
    for _ in range(10):
        state = secrets.token_urlsafe(16)
        answer = httpx.get(url, params={"state": state, "code": "x"}, headers=headers, verify=TLS)
        assert answer.status_code == 400
    assert httpx.get(url, params={"state": "s", "code": "x"}, headers=headers, verify=TLS).status_code == 429
    login = httpx.get(sso.url + "/console/oidc/login", headers=headers, verify=TLS)
    assert login.status_code == 429
