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
import calendar
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from gateway.admin.keys import KeyStore
from gateway.admin.teams import TeamStore
from gateway.admin.usage_report import usage_report
from gateway.ledger.query import DateRange
from gateway.ledger.reports import DEFAULT_GROUP_BY, spend_report
from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.money.rollups import Amounts
from gateway.store.keyspace import KeySpace


class MonthError(ValueError):
    """The month asked for is not ``YYYY-MM``."""


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def month_range(month: str | None) -> DateRange:
    """``YYYY-MM`` (default: the current UTC month) as the range of its days."""
    text = month or current_month()
    try:
        if len(text) != 7 or text[4] != "-":
            raise ValueError
        year, number = int(text[:4]), int(text[5:])
        first = date(year, number, 1)
    except ValueError:
        raise MonthError(f"'month' must look like 2026-11, not {text!r}.") from None
    return DateRange(first, date(year, number, calendar.monthrange(year, number)[1]))


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


async def overview(redis: Any, days: DateRange, only: Collection[str] | None = None) -> dict[str, Any]:
    """The overview page: the team table (the month's spend, the budget now), totals, spend per day;
    of the teams ``only`` if given (a team-admin's)."""
    by_team = await spend_report(redis, days, ("team",), only)
    by_day = await spend_report(redis, days, ("team", "day"), only)
    named = [team for team in await TeamStore(redis).names() if only is None or team in only]
    teams = sorted({row[0] for row in by_team.rows} | set(named))
    budgets = await team_budgets(redis, teams)
    return {
        "month": days.start.strftime("%Y-%m"),
        **days.as_json(),
        "days": days.days(),
        "teams": [
            {
                "team": team,
                **by_team.rows.get((team,), Amounts()).as_json(),
                "budget": budgets[team].as_json(),
            }
            for team in teams
        ],
        "totals": by_team.totals.as_json(),
        "daily": [
            {
                "team": team,
                "day": day,
                "spend_micros": amounts.spend_micros,
                "spend_usd": micros_to_usd(amounts.spend_micros),
            }
            for (team, day), amounts in sorted(by_day.rows.items())
        ],
    }


async def spend_csv(redis: Any, days: DateRange, only: Collection[str] | None = None) -> str:
    """Exactly ``gateway report spend --start .. --end .. --format csv`` (grouped by team)."""
    report = await spend_report(redis, days, DEFAULT_GROUP_BY, only)
    return report.to_csv()


async def keys_page(redis: Any, team: str | None, only: Collection[str] | None = None) -> dict[str, Any]:
    """Every key (of ``team``; of the teams ``only``, if given) with its spend in its current budget
    period, and the team list."""
    store = KeyStore(redis)
    everyone = [key for key in await store.list() if only is None or key["team"] in only]
    keys = [k for k in everyone if team is None or k["team"] == team]
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
                "used_ratio": None if not budget else spent / budget,
            }
        )
    return {"object": "list", "data": rows, "teams": sorted({k["team"] for k in everyone})}
