"""What tripped the new users of the CLI and the API: a whole key given where a key_id belongs,
a month asked for by its name, one team's records, a budget written like "$1,000", and /docs
with no internet access (a real browser, nothing fetched from elsewhere).

Real parts: the session's gateway, Redis and simulator, ``python -m gateway``, Debian's chromium.
"""

from __future__ import annotations

import csv
import io
import json
import secrets

from tests.support import Gateway, RedisServer, UtcSpan, generate, run_clis
from tests.support import run_cli as cli


def test_a_whole_key_given_to_revoke_is_taken_for_its_key_id_and_never_printed_back(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    secret, key_id = gateway.create_key(team="pasted")
    other, _ = gateway.create_key(team="pasted")
    forged = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")  # its key_id, wrong secret
    shown, refused, not_a_key = run_clis(
        redis_server.url,
        ["keys", "show", secret, "--json"],
        ["keys", "revoke", forged],
        ["keys", "usage", "sk-proj-" + "x" * 40],
    )
    assert shown.returncode == 0 and json.loads(shown.stdout)["key_id"] == key_id
    assert secret not in shown.stdout + shown.stderr
    assert refused.returncode == 1 and forged not in refused.stdout + refused.stderr
    assert "secret key, not printed here" in refused.stderr
    assert not_a_key.returncode == 1 and "sk-proj-" not in not_a_key.stderr

    revoked = cli(redis_server.url, "keys", "revoke", secret, "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["status"] == "revoked" and secret not in revoked.stdout + revoked.stderr
    assert generate(gateway, secret).status_code == 401
    assert generate(gateway, other).status_code == 200  # only the key given

    with gateway.admin() as admin:  # a whole key in the admin API's path is not answered back
        answer = admin.delete(f"/admin/v1/keys/{other}")
    assert answer.status_code == 404 and other not in answer.text


def test_report_spend_takes_a_month_and_usage_export_a_team(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    team = f"monthly-{secrets.token_hex(3)}"
    key, key_id = gateway.create_key(team=team)
    other, _ = gateway.create_key(team=f"{team}-b")
    span = UtcSpan()
    assert generate(gateway, key).status_code == 200
    assert generate(gateway, other).status_code == 200
    month = span.months()[-1]
    day = span.days()[-1]
    by_month, by_days, exported, both = run_clis(
        redis_server.url,
        ["report", "spend", "--month", month, "--group-by", "team", "--format", "json"],
        ["report", "spend", "--start", f"{month}-01", "--end", day, "--group-by", "team", "--format", "json"],
        ["usage", "export", "--month", month, "--team", team, "--format", "csv"],
        ["report", "spend", "--month", month, "--start", f"{month}-01"],
    )
    assert by_month.returncode == 0, by_month.stderr
    report = json.loads(by_month.stdout)
    assert report["start"] == f"{month}-01" and report["end"][:7] == month and report["end"] >= day
    assert report["data"] == json.loads(by_days.stdout)["data"]  # nothing after today yet
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["team"], r["key_id"]) for r in rows] == [(team, key_id)]
    assert both.returncode == 1 and "not both" in both.stderr


def test_a_budget_written_like_dollars_with_separators_says_the_format_wanted(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    done = cli(redis_server.url, "teams", "set", "dollars", "--budget-usd", "$1,000")
    assert done.returncode == 1
    assert "'$1,000' is not a plain decimal number of US dollars such as 1000 or 0.135" in done.stderr
    with gateway.admin() as admin:
        error = admin.post("/admin/v1/keys", json={"team": "dollars", "name": "n", "budget_usd": "1,000"})
    assert error.status_code == 400 and "no thousands separators" in error.json()["error"]["message"]


def test_the_api_documentation_renders_with_nothing_fetched_from_elsewhere(gateway: Gateway) -> None:
    from tests.console_browser import launch_browser

    requested: list[str] = []
    with launch_browser() as browser:
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(gateway.url + "/docs")
        title = page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        assert title is not None and "Image generation gateway" in title.inner_text()
        page.get_by_text("/v1/images/generations").first.wait_for(timeout=20_000)
        page.screenshot(path="/tmp/docs-offline.png")
    leaving = [url for url in requested if not url.startswith(gateway.url + "/")]
    assert requested and not leaving, leaving
