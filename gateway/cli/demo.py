"""What ``gateway serve --demo-key`` (``make run``) gives a newcomer: a team key and an admin token.

Both are kept 0600 in the state directory and reused by the next start from the same folder,
so a restart neither revokes the key someone is using nor changes the token in their shell:

- ``admin-token``: made only when ``GATEWAY_ADMIN_TOKEN`` is unset, so the README's admin
  commands work under ``make run`` as printed; ``gateway admin-token`` prints it for another shell.
  A deployment sets its own token and never gets one.
- ``demo-key``: the demo key's secret. Reused while it still authenticates and is active; if it
  was revoked, expired, or belongs to another store, a new one is issued. A demo key whose
  secret file is gone is revoked, since nobody can know its secret any more.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.admin.keys import KeyCreate, KeyStore, key_status, parse_token
from gateway.admin.teams import TeamSettings, TeamStore
from gateway.cli.common import CommandError, Commands, plural
from gateway.core import private_files
from gateway.core.settings import Settings, load_settings
from gateway.money import pricing
from gateway.store.keyspace import DEMO_KEY

DEMO_MODEL = "doubao-seedream-4-5-251128"
ADMIN_TOKEN_FILE = "admin-token"
DEMO_KEY_FILE = "demo-key"
DEMO_SPEC = KeyCreate(
    team="demo", name="make-run demo key", budget_usd=Decimal("5"), budget_period="day", rpm=60
)
# The demo team's own budget, shared by all its keys; set once, so an admin's change stays.
DEMO_TEAM = TeamSettings(
    budget_usd=Decimal("50"),
    budget_period="month",
    alert_thresholds=[Decimal("0.5"), Decimal("0.8"), Decimal("1")],
)


def local_admin_token(state_dir: Path) -> str:
    """The demo run's admin token, made once and kept 0600 in the state directory."""
    private_files.private_directory(state_dir)
    return private_files.stored_secret(state_dir / ADMIN_TOKEN_FILE, prefix="gw-admin-")


async def demo_key(redis: Any, state_dir: Path) -> str:
    """The demo key's secret: the saved one while it still works here, else a new one (saved 0600)."""
    await pricing.seed_prices(redis, None)
    teams = TeamStore(redis)
    if not await teams.configured(DEMO_SPEC.team):
        await teams.set(DEMO_SPEC.team, DEMO_TEAM)
    store = KeyStore(redis)
    path = state_dir / DEMO_KEY_FILE
    saved = private_files.read_secret(path)
    parsed = parse_token(saved) if saved is not None else None
    if saved is not None and parsed is not None:
        record = await store.authenticate(saved)
        if record is not None and key_status(record) == "active":
            await redis.set(DEMO_KEY, parsed[0])
            return saved
    previous = await redis.get(DEMO_KEY)
    if previous:
        await store.revoke(previous.decode())  # its secret is lost or no longer works
    token, record = await store.create(DEMO_SPEC)
    private_files.write_secret(path, token)
    await redis.set(DEMO_KEY, record["key_id"])
    return token


def print_example(settings: Settings, token: str, admin_token: str | None) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    budget = f"${DEMO_SPEC.budget_usd:.2f} a day, {plural(DEMO_SPEC.rpm or 0, 'request')}/minute"
    key_id = (parse_token(token) or ("<key_id>", ""))[0]
    print(
        f"""
Gateway starting on {base}  (docs: {base}/docs, metrics: {base}/metrics)

Demo team key (team "demo", {budget}; kept in {settings.state_dir / DEMO_KEY_FILE}):
  {token}
To raise its budget: gateway keys update {key_id} --budget-usd 50  (calls past it get a 429)
The team "demo" has a budget of ${DEMO_TEAM.budget_usd:.2f} a month for all its keys
(gateway teams usage demo; gateway teams set demo --budget-usd ...).

Try it with curl:
  curl -s {base}/v1/images/generations \\
    -H "Authorization: Bearer {token}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "{DEMO_MODEL}", "prompt": "a red fox in the snow, watercolor", "size": "2K"}}'

Or with the OpenAI Python SDK (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{token}")
  image = client.images.generate(model="{DEMO_MODEL}", prompt="a red fox in the snow")
  print(image.data[0].url)
""",
        flush=True,
    )
    if admin_token is not None:
        print(
            f"Local admin token for /admin/v1 (kept in {settings.state_dir / ADMIN_TOKEN_FILE}):\n"
            f"  export GATEWAY_ADMIN_TOKEN={admin_token}\n",
            flush=True,
        )


def add_admin_token_command(commands: Commands) -> None:
    command = commands.add_parser(
        "admin-token",
        help="print the local admin token a demo run (make run) made",
        description="Print the admin token `gateway serve --demo-key` made in GATEWAY_STATE_DIR when "
        "GATEWAY_ADMIN_TOKEN was unset, e.g. export GATEWAY_ADMIN_TOKEN=$(gateway admin-token).",
    )
    command.set_defaults(handler=_print_admin_token)


def _print_admin_token(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.admin_token is not None:
        print(settings.admin_token.get_secret_value())
        return 0
    token = private_files.read_secret(settings.state_dir / ADMIN_TOKEN_FILE)
    if token is None:
        raise CommandError(
            f"no local admin token in {settings.state_dir.resolve()}: it is made by "
            "`gateway serve --demo-key` (make run) when GATEWAY_ADMIN_TOKEN is unset"
        )
    print(token)
    return 0
