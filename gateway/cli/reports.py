"""``gateway report spend`` and ``gateway usage export``: finance's commands.

They read Redis directly, so they work whether or not a gateway runs, and print the same
numbers as ``/admin/v1/reports/spend`` and ``/admin/v1/usage``. Both are read commands: with no
gateway state to read they fail instead of reporting an empty store's zeros.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.admin.teams import check_team_name
from gateway.cli.common import CommandError, Commands, print_json, print_table
from gateway.cli.store import run_with_redis
from gateway.ledger.exports import EXPORT_FORMATS, UsageExport
from gateway.ledger.query import DateRange, LedgerQueryError, parse_month, parse_range
from gateway.ledger.reports import DEFAULT_GROUP_BY, parse_group_by, spend_report

T = TypeVar("T")
DATES_HELP = (
    "UTC dates, YYYY-MM-DD, both included (--start X --end X is the day X), or --month YYYY-MM "
    "for a whole calendar month"
)


def add_report_commands(commands: Commands) -> None:
    report = commands.add_parser(
        "report",
        help="spend reports from the ledger",
        description="Spend reports from the ledger's daily rollups (fast for any range).",
    )
    sub = report.add_subparsers(title="report commands", metavar="REPORT")
    spend = sub.add_parser(
        "spend",
        help="calls, images, spend, cost and margin per group, with totals",
        description="Calls, images, spend, cost (what the upstream channels charged the company) and "
        f"margin (spend - cost), USD to the micro-dollar, per group, and totals. {DATES_HELP}.",
    )
    _add_range(spend)
    spend.add_argument(
        "--group-by",
        default=",".join(DEFAULT_GROUP_BY),
        help="comma-separated: team, key (key_id and key_name columns), model, day, user (the "
        "OpenAI 'user' a call named; '' for calls that named none), channel (the upstream channel that "
        "answered); '' for totals only (default: team)",
    )
    spend.add_argument("--team", help="only this team's calls")
    spend.add_argument("--format", choices=["table", "csv", "json"], default="table")
    spend.set_defaults(handler=_report_spend)

    usage = commands.add_parser(
        "usage",
        help="raw usage records from the ledger",
        description="Raw usage records, for reconciliation against the upstream's bill.",
    )
    usage_sub = usage.add_subparsers(title="usage commands", metavar="ACTION")
    export = usage_sub.add_parser(
        "export",
        help="every usage record of a range of days, to stdout, in time order",
        description=f"Every usage record of the range, streamed to stdout in time order. {DATES_HELP}.",
    )
    _add_range(export)
    export.add_argument("--team", help="only the records of this team's keys (revoked ones included)")
    export.add_argument("--format", choices=list(EXPORT_FORMATS), default="jsonl")
    export.set_defaults(handler=_usage_export)


def _add_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--end", help="last day, YYYY-MM-DD (UTC), included")
    parser.add_argument("--month", help="a whole UTC month, YYYY-MM, instead of --start and --end")


def _days(args: argparse.Namespace) -> DateRange:
    """--month, or --start and --end (both): a range of UTC days."""
    if args.month is not None:
        if args.start is not None or args.end is not None:
            raise CommandError("give --month, or --start and --end, not both")
        return _query(parse_month, args.month)
    if args.start is None or args.end is None:
        raise CommandError("give --start and --end (YYYY-MM-DD, UTC, both included), or --month YYYY-MM")
    return _query(parse_range, args.start, args.end)


def _query(parse: Callable[..., T], *args: Any) -> T:
    try:
        return parse(*args)
    except LedgerQueryError as exc:
        raise CommandError(str(exc)) from None


def _team(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return check_team_name(name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _report_spend(args: argparse.Namespace) -> int:
    days = _days(args)
    group_by = _query(parse_group_by, args.group_by)
    team = _team(args.team)
    teams = None if team is None else [team]
    report = run_with_redis(lambda redis: spend_report(redis, days, group_by, teams))
    if args.format == "json":
        print_json(report.as_json())
    elif args.format == "csv":
        sys.stdout.write(report.to_csv())
    else:
        print_table(report.columns, report.table())
    return 0


def _usage_export(args: argparse.Namespace) -> int:
    days = _days(args)
    team = _team(args.team)
    out = sys.stdout.buffer

    async def action(redis: Any) -> None:
        export = await UsageExport.open(redis, days, None if team is None else [team])
        async for chunk in export.chunks(args.format):
            out.write(chunk)
        out.flush()

    try:
        run_with_redis(action)
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
