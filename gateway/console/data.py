"""What the console's pages show, computed from the same functions as the admin API and the CLI.

The overview's table is ``ledger.spend_report(..., group_by=("team",))`` for the month: the very
report behind ``GET /admin/v1/reports/spend`` and ``gateway report spend``, so every number is the
same to the micro-dollar. Money stays integer micro-USD here and is printed with ``micros_to_usd``
(six decimals, as the ledger has it: ``0.486000``, never rounded to cents).

Budget use per team: each team's own budget (gateway/admin/teams.py), read with ``TeamStore.get`` and
``TeamStore.usage``, the functions behind ``GET /admin/v1/teams/{team}`` and ``.../usage``. A
budget is about the team's current period (day, month or total), whatever month the table shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.admin.key_listing import key_page
from gateway.admin.teams import TeamStore
from gateway.admin.usage_report import usage_report
from gateway.ledger.query import DateRange, LedgerQueryError, parse_month
from gateway.ledger.reports import DEFAULT_GROUP_BY, spend_report
from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.money.rollups import Amounts
from gateway.store.keyspace import KeySpace

KEYS_PER_PAGE = 50


class MonthError(ValueError):
    """The month asked for is not ``YYYY-MM``."""


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def month_range(month: str | None) -> DateRange:
    """``YYYY-MM`` (default: the current UTC month) as the range of its days."""
    try:
        return parse_month(month or current_month())
    except LedgerQueryError as exc:
        raise MonthError(str(exc)) from None


@dataclass(frozen=True)
class TeamBudget:
    """A team's settings (``TeamStore.get``) and budget now (``TeamStore.usage``), as the API has them."""

    settings: dict[str, Any]
    usage: dict[str, Any]

    def used_ratio(self) -> float | None:
        """Spent in the current period over the budget; None without a budget. A budget of 0
        allows nothing: it is shown as used up."""
        budget = self.usage["budget_usd"]
        if budget is None:
            return None
        budget_micros = usd_to_micros(budget)
        if budget_micros == 0:
            return 1.0
        return usd_to_micros(self.usage["spent_usd"]) / budget_micros

    def as_json(self) -> dict[str, Any]:
        usage, settings = self.usage, self.settings
        return {
            "budget_usd": usage["budget_usd"],
            "budget_period": settings["budget_period"],
            "period": usage["period"],
            "spent_usd": usage["spent_usd"],
            "reserved_usd": usage["reserved_usd"],
            "remaining_usd": usage["remaining_usd"],
            "used_ratio": self.used_ratio(),
            "exhausted": usage["exhausted"],
            "resets_at": usage["resets_at"],
            "images_per_day": settings["images_per_day"],
            "images_today": usage["images_today"],
            "alert_thresholds": settings["alert_thresholds"],
            "keys": settings["keys"],
        }


async def team_budgets(redis: Any, teams: list[str]) -> dict[str, TeamBudget]:
    """Each team's settings and budget now, read as ``GET /admin/v1/teams/{team}[/usage]`` reads them."""
    store = TeamStore(redis)

    async def one(team: str) -> TeamBudget:
        settings, usage = await asyncio.gather(store.get(team), store.usage(team))
        return TeamBudget(settings, usage)

    return dict(zip(teams, await asyncio.gather(*(one(t) for t in teams)), strict=True))


MAX_DAILY_BARS = 62  # a longer range is charted per month: a year per day was 36,500 points


async def overview(redis: Any, days: DateRange, only: Collection[str] | None = None) -> dict[str, Any]:
    """The overview page: each team's and each channel's calls, images, spend, cost and margin for
    the range, totals, and spend per day (per month for a range over two months) for the chart.
    Budgets are on the Teams page: they are about each team's current period, not the range."""
    by_team, by_channel = await asyncio.gather(
        spend_report(redis, days, ("team",), only), spend_report(redis, days, ("channel",), only)
    )
    named = [team for team in await TeamStore(redis).names() if only is None or team in only]
    teams = sorted({row[0] for row in by_team.rows} | set(named))
    if len(days.days()) <= MAX_DAILY_BARS:
        by_day = await spend_report(redis, days, ("team", "day"), only)
        bucket, labels = "day", days.days()
        points = sorted(by_day.rows.items())
    else:
        months = month_parts(days)
        reports = await asyncio.gather(*(spend_report(redis, part, ("team",), only) for part in months))
        bucket, labels = "month", [part.start.strftime("%Y-%m") for part in months]
        points = [
            ((team, label), amounts)
            for label, report in zip(labels, reports, strict=True)
            for (team,), amounts in sorted(report.rows.items())
        ]
    return {
        **days.as_json(),
        "bucket": bucket,
        "days": labels,
        "teams": [{"team": team, **by_team.rows.get((team,), Amounts()).as_json()} for team in teams],
        "totals": by_team.totals.as_json(),
        "channels": by_channel.as_json()["data"],
        "daily": [
            {
                "team": team,
                "day": label,
                "spend_micros": amounts.spend_micros,
                "spend_usd": micros_to_usd(amounts.spend_micros),
            }
            for (team, label), amounts in points
        ],
    }


def month_parts(days: DateRange) -> list[DateRange]:
    """The range cut at month ends: its part of each calendar month it touches."""
    parts, start = [], days.start
    while start <= days.end:
        month = parse_month(start.strftime("%Y-%m"))
        parts.append(DateRange(start, min(month.end, days.end)))
        start = month.end + timedelta(days=1)
    return parts


async def teams_page(redis: Any, only: Collection[str] | None = None) -> dict[str, Any]:
    """The Teams page: every team's budget now (its current period), as the admin API reads it."""
    teams = [team for team in await TeamStore(redis).names() if only is None or team in only]
    budgets = await team_budgets(redis, teams)
    return {"object": "list", "data": [{"team": team, **budgets[team].as_json()} for team in teams]}


async def spend_csv(
    redis: Any, days: DateRange, only: Collection[str] | None = None, by: str = DEFAULT_GROUP_BY[0]
) -> str:
    """Exactly ``gateway report spend --start .. --end .. --group-by BY --format csv`` (``by``: team,
    the default, or channel)."""
    report = await spend_report(redis, days, (by,), only)
    return report.to_csv()


async def keys_page(
    redis: Any,
    teams: list[str] | None,
    search: str | None = None,
    page: int = 1,
    per_page: int = KEYS_PER_PAGE,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """One page of keys (of ``teams``, default every team's; matching ``search``), by team and name,
    each with its spend in its current budget period; the team list for the filter (the teams
    ``only``, if given: a team-admin's)."""
    listing, names = await asyncio.gather(
        key_page(redis, teams=teams, search=search, page=page, per_page=per_page), TeamStore(redis).names()
    )
    teams_listed = [team for team in names if only is None or team in only]
    keys = listing.data
    usages = await asyncio.gather(*(usage_report(redis, KeySpace(k["key_id"], k["team"])) for k in keys))
    rows = []
    for key, usage in zip(keys, usages, strict=True):
        budget = usd_to_micros(key["budget_usd"]) if key["budget_usd"] is not None else None
        spent = usd_to_micros(usage["spent_usd"])
        rows.append(
            {
                **key,
                "spent_usd": usage["spent_usd"],
                "spent_period": usage["period"] or key["budget_period"] or "month",
                "used_ratio": None if budget is None else (1.0 if budget == 0 else spent / budget),
                "exhausted": usage["exhausted"],
            }
        )
    return {**listing.as_json(), "data": rows, "teams": teams_listed}
