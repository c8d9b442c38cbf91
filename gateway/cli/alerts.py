"""``gateway alerts list``: the budget alerts waiting in Redis, webhook or not.

Without ``GATEWAY_ALERT_WEBHOOK_URL`` no process sends alerts: they wait in each team's outbox,
where nothing else shows them. This lists them (team, what, when it was queued, attempts), and
``no_webhook_warning`` is the line the commands that set thresholds print when this environment
has no webhook.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gateway.alerts import message, outbox
from gateway.cli.common import Commands, add_json_option, print_json, print_table
from gateway.cli.store import run_with_redis
from gateway.store.registry import registered_teams

COLUMNS = ["team", "id", "scope", "key", "threshold", "spent_usd", "budget_usd", "queued_at", "attempts"]


def add_alerts_commands(commands: Commands) -> None:
    alerts = commands.add_parser(
        "alerts",
        help="budget alerts waiting to be delivered",
        description="Budget alerts queued in Redis and not delivered yet: all of them when no "
        "GATEWAY_ALERT_WEBHOOK_URL is set, else those the webhook has not accepted so far.",
    )
    sub = alerts.add_subparsers(title="alert commands", metavar="ACTION")
    listing = sub.add_parser("list", help="every alert waiting in Redis, oldest first")
    listing.add_argument("--team", help="only this team's alerts")
    add_json_option(listing)
    listing.set_defaults(handler=_list)


async def waiting_alerts(redis: Any, team: str | None = None) -> list[dict[str, Any]]:
    """Every waiting alert as the webhook would receive it, with its attempts, oldest first."""
    teams = [team] if team else await registered_teams(redis)
    counts = await outbox.pending_counts(redis, teams)
    found: list[dict[str, Any]] = []
    for name in sorted(t for t, n in counts.items() if n):
        for alert in await outbox.waiting(redis, name):
            if alert.facts is None:
                continue
            facts = message.AlertFacts.from_json(alert.facts)
            body = message.body_json(alert.alert_id, facts)
            found.append({**body, "attempts": alert.attempts, "queued_at_ms": facts.at_ms})
    return sorted(found, key=lambda a: (a["queued_at_ms"], a["id"]))


def _list(args: argparse.Namespace) -> int:
    alerts = run_with_redis(lambda redis: waiting_alerts(redis, args.team))
    if args.json:
        print_json(alerts)
        return 0
    rows = [
        [
            a["team"],
            a["id"],
            a["scope"],
            a.get("key_name") or "-",
            a["threshold"],
            a["spent_usd"],
            a["budget_usd"],
            a["at"],
            a["attempts"],
        ]
        for a in alerts
    ]
    print_table(COLUMNS, rows)
    if not os.environ.get("GATEWAY_ALERT_WEBHOOK_URL"):
        print(f"\n{no_webhook_warning()}", file=sys.stderr)
    return 0


def no_webhook_warning() -> str:
    return (
        "note: GATEWAY_ALERT_WEBHOOK_URL is not set here; a gateway without it sends no alert: "
        "they wait in Redis (gateway alerts list), and those older than GATEWAY_ALERT_MAX_AGE_S "
        "are dropped once a webhook is set"
    )


def warn_if_no_webhook(thresholds: list[Any] | None) -> None:
    """After setting alert thresholds: say where their alerts go if nothing will send them."""
    if thresholds and not os.environ.get("GATEWAY_ALERT_WEBHOOK_URL"):
        print(f"gateway: {no_webhook_warning()}", file=sys.stderr)
