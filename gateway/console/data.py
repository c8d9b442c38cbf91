"""What the console's pages show, computed from the same functions as the admin API and the CLI.

The overview's table is ``ledger.spend_report(..., group_by=("team",))`` for the month: the very
report behind ``GET /admin/v1/reports/spend`` and ``gateway report spend``, so every number is the
same to the micro-dollar. Money stays integer micro-USD here and is printed with ``micros_to_usd``
(six decimals, as the ledger has it: ``0.486000``, never rounded to cents).

Budget use per team: teams have no budget of their own yet (the team budgets issue). Until then a
team's budget is the sum of its active keys' monthly budgets, compared with what those keys spent
this month. :func:`team_budgets` is the one place to change when team budgets land: it returns a
:class:`TeamBudget` per team, and the page only draws what it gets.
"""

from __future__ import annotations

import asyncio
import calendar
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from gateway import ledger
from gateway.keys import KeyStore
from gateway.money import micros_to_usd, usd_to_micros
from gateway.redis_keys import KeySpace
from gateway.usage_report import usage_report


class MonthError(ValueError):
    """The month asked for is not ``YYYY-MM``."""


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def month_range(month: str | None) -> ledger.DateRange:
    """``YYYY-MM`` (default: the current UTC month) as the range of its days."""
    text = month or current_month()
    try:
        if len(text) != 7 or text[4] != "-":
            raise ValueError
        year, number = int(text[:4]), int(text[5:])
        first = date(year, number, 1)
    except ValueError:
        raise MonthError(f"'month' must look like 2026-11, not {text!r}.") from None
    return ledger.DateRange(first, date(year, number, calendar.monthrange(year, number)[1]))


@dataclass
class TeamBudget:
    """A team's budget and what counts against it; ``budget_micros`` None: no budget known."""

    budget_micros: int | None = None
    spent_micros: int = 0
    keys: int = 0

    def as_json(self) -> dict[str, Any]:
        budget = self.budget_micros
        return {
            "budget_usd": None if budget is None else micros_to_usd(budget),
            "budget_micros": budget,
            "spent_usd": micros_to_usd(self.spent_micros),
            "spent_micros": self.spent_micros,
            "used_ratio": None if not budget else self.spent_micros / budget,
            "source": "key_budgets",
            "keys": self.keys,
        }


def team_budgets(keys: list[dict[str, Any]], key_spend: dict[str, int]) -> dict[str, TeamBudget]:
    """Per team: the sum of its active keys' monthly budgets and those keys' spend in the month."""
    budgets: dict[str, TeamBudget] = defaultdict(TeamBudget)
    for key in keys:
        if key["status"] != "active" or key["budget_period"] != "month" or key["budget_usd"] is None:
            continue
        entry = budgets[key["team"]]
        entry.budget_micros = (entry.budget_micros or 0) + usd_to_micros(key["budget_usd"])
        entry.spent_micros += key_spend.get(key["key_id"], 0)
        entry.keys += 1
    return budgets


async def overview(redis: Any, days: ledger.DateRange) -> dict[str, Any]:
    """The overview page: the team table, its totals, spend per day per team, budget use."""
    by_team = await ledger.spend_report(redis, days, ("team",))
    detail = await ledger.spend_report(redis, days, ("team", "key", "day"))
    keys = await KeyStore(redis).list()
    key_spend: dict[str, int] = defaultdict(int)
    daily: dict[tuple[str, str], int] = defaultdict(int)
    for (team, key_id, _name, day), amounts in detail.rows.items():
        key_spend[key_id] += amounts.spend_micros
        daily[(team, day)] += amounts.spend_micros
    budgets = team_budgets(keys, key_spend)
    teams = sorted({row[0] for row in by_team.rows} | set(budgets))
    return {
        "month": days.start.strftime("%Y-%m"),
        **days.as_json(),
        "days": days.days(),
        "teams": [
            {
                "team": team,
                **by_team.rows.get((team,), ledger.Amounts()).as_json(),
                "budget": budgets.get(team, TeamBudget()).as_json(),
            }
            for team in teams
        ],
        "totals": by_team.totals.as_json(),
        "daily": [
            {"team": team, "day": day, "spend_micros": micros, "spend_usd": micros_to_usd(micros)}
            for (team, day), micros in sorted(daily.items())
        ],
    }


async def spend_csv(redis: Any, days: ledger.DateRange) -> str:
    """Exactly ``gateway report spend --start .. --end .. --format csv`` (grouped by team)."""
    report = await ledger.spend_report(redis, days, ledger.DEFAULT_GROUP_BY)
    return report.to_csv()


async def keys_page(redis: Any, team: str | None) -> dict[str, Any]:
    """Every key (of ``team``) with its spend in its current budget period, and the team list."""
    store = KeyStore(redis)
    everyone = await store.list()
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
