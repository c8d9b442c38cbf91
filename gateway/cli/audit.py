"""``gateway audit list``, and the audit entry every changing command writes (``via`` cli).

The CLI talks to Redis directly, so it stores its own entries in the same trail as the admin API
and the console (admin/audit.py), with the OS user who ran it as ``actor``. It prints no log line:
a command's stdout is its output.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from gateway.admin import audit
from gateway.cli.common import CommandError, Commands, add_json_option, print_json, print_table
from gateway.cli.store import run_with_redis
from gateway.core.settings import load_settings
from gateway.store.protocol import Redis

LIST_COLUMNS = ["time", "action", "actor", "via", "client", "target"]


def os_user() -> str:
    """Who ran the command, as the operating system knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def audited(redis: Redis, action: str, **target: Any) -> None:
    """The audit entry of a change this command just made."""
    entry = audit.AuditEntry(action, os_user(), "cli", target)
    await audit.record(redis, entry, load_settings().audit_retention_days, log_line=False)


def add_audit_commands(commands: Commands) -> None:
    parser = commands.add_parser(
        "audit",
        help="read the audit trail: every change, by whom, through what",
        description="The audit trail, newest first: every change made through the API, the console "
        "or this command line, with when, what, who (actor) and through what (via).",
    )
    sub = parser.add_subparsers(title="audit commands", metavar="ACTION")
    listing = sub.add_parser("list", help="the newest entries first")
    listing.add_argument("--since", help="oldest: a UTC day (2026-11-01) or a time with offset")
    listing.add_argument("--until", help="newest: a UTC day (included) or a time with offset")
    listing.add_argument(
        "--limit", type=int, default=100, help=f"at most this many (default 100, max {audit.MAX_LIST})"
    )
    add_json_option(listing)
    listing.set_defaults(handler=_list)


def _list(args: argparse.Namespace) -> int:
    try:
        since, until = audit.parse_moment(args.since), audit.parse_moment(args.until, end_of_day=True)
    except ValueError as exc:
        raise CommandError(f"--since/--until {exc}") from None
    if not 1 <= args.limit <= audit.MAX_LIST:
        raise CommandError(f"--limit must be 1 to {audit.MAX_LIST}")
    found = run_with_redis(lambda redis: audit.entries(redis, since, until, args.limit))
    if args.json:
        print_json(found)
    else:
        rows = [
            [e["time"], e["action"], e["actor"], e["via"], e["client"], _target(e["target"])] for e in found
        ]
        print_table(LIST_COLUMNS, rows)
    return 0


def _target(target: dict[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in target.items() if value is not None)
