"""``gateway teams``: a team's budget, daily image cap and alert thresholds, and its usage now."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.admin.teams import TeamSettings, TeamStore, check_team_name
from gateway.cli.alerts import warn_if_no_webhook
from gateway.cli.audit import audited
from gateway.cli.common import (
    CommandError,
    Commands,
    add_json_option,
    print_json,
    print_record,
    print_table,
    validated,
)
from gateway.cli.key_options import NONE_WORDS, add_alert_option, alerts_from_args, count_option
from gateway.cli.store import Access, run_with_redis

LIST_COLUMNS = ["team", "budget_usd", "budget_period", "spent_usd", "remaining_usd", "images_per_day", "keys"]


def add_teams_commands(commands: Commands) -> None:
    teams = commands.add_parser(
        "teams",
        help="team budgets shared by all of a team's keys",
        description="Team budgets, daily image caps and alert thresholds, shared by all of a team's keys.",
    )
    sub = teams.add_subparsers(title="team commands", metavar="ACTION")

    put = sub.add_parser("set", help="change a team's settings (only the options given)")
    put.add_argument("team")
    put.add_argument("--budget-usd", help="the team's budget in USD per period; 'none' removes it")
    put.add_argument("--budget-period", choices=["day", "month", "total"], help="default month")
    put.add_argument("--images-per-day", type=count_option, help="cap on the team's images per UTC day")
    add_alert_option(put)
    add_json_option(put)
    put.epilog = "Options left out keep their value; 'none' removes a limit."
    put.set_defaults(handler=_set)

    listing = sub.add_parser("list", help="every team with settings or keys")
    add_json_option(listing)
    listing.set_defaults(handler=_list)

    for name, helptext, handler in (
        ("show", "one team's settings", _show),
        ("usage", "a team's budget, spend and reservations now", _usage),
    ):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("team")
        add_json_option(command)
        command.set_defaults(handler=handler)


def _settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if args.budget_usd is not None:
        given["budget_usd"] = None if args.budget_usd.lower() in NONE_WORDS else args.budget_usd
    if args.budget_period is not None:
        given["budget_period"] = args.budget_period
    if args.images_per_day is not None:
        given["images_per_day"] = None if args.images_per_day == "none" else args.images_per_day
    if args.alert_thresholds is not None:
        given["alert_thresholds"] = alerts_from_args(args)
    return given


def _team(name: str) -> str:
    try:
        return check_team_name(name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _print(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.json:
        print_json(record)
    else:
        print_record(record)


def _set(args: argparse.Namespace) -> int:
    team = _team(args.team)
    given = _settings_from_args(args)
    if not given:
        raise CommandError(
            "nothing to change: give --budget-usd, --budget-period, --images-per-day or --alert-thresholds"
        )
    spec = validated(TeamSettings, given)

    async def set_team(redis: Any) -> dict[str, Any]:
        record = await TeamStore(redis).set(team, spec)
        await audited(redis, "team.set", team=team, fields=sorted(spec.model_fields_set))
        return record

    _print(args, run_with_redis(set_team, Access.WRITE))
    warn_if_no_webhook(spec.alert_thresholds)
    return 0


def _list(args: argparse.Namespace) -> int:
    records = run_with_redis(lambda redis: TeamStore(redis).list())
    if args.json:
        print_json(records)
    else:
        rows = [{**record, **record["usage"]} for record in records]
        print_table(LIST_COLUMNS, [[row.get(c) for c in LIST_COLUMNS] for row in rows])
    return 0


def _known(args: argparse.Namespace, read: str) -> dict[str, Any]:
    team = _team(args.team)

    async def action(redis: Any) -> dict[str, Any] | None:
        store = TeamStore(redis)
        if not await store.exists(team):
            return None
        result: dict[str, Any] = await getattr(store, read)(team)
        return result

    found = run_with_redis(action)
    if found is None:
        raise CommandError(f"no team {team!r} (a team exists once it has settings or keys)")
    return found


def _show(args: argparse.Namespace) -> int:
    _print(args, _known(args, "get"))
    return 0


def _usage(args: argparse.Namespace) -> int:
    _print(args, _known(args, "usage"))
    return 0
