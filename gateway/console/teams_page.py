"""What a team's page shows for a range of days: its keys, models, end users and upstream channels
with their calls, images, spend, cost and margin, each as the spend report has it (so each CSV is
``gateway report spend --team T --group-by team,key|team,model|team,user|team,channel --format csv``
for the same dates), and its budget now.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.console.data import team_budgets
from gateway.ledger.query import DateRange
from gateway.ledger.reports import SpendReport, group_columns, spend_report

# A table of the team's page -> the report's grouping (the team first, as the CSV's first column).
TABLES = {
    "keys": ("team", "key"),
    "models": ("team", "model"),
    "users": ("team", "user"),
    "channels": ("team", "channel"),
}


async def table_report(redis: Any, team: str, days: DateRange, table: str) -> SpendReport:
    return await spend_report(redis, days, TABLES[table], teams=[team])


def rows(report: SpendReport) -> list[dict[str, Any]]:
    """The report's rows without the team column (the page is the team's)."""
    found: list[dict[str, Any]] = report.as_json()["data"]
    for row in found:
        del row["team"]
    return found


async def team_page(redis: Any, team: str, days: DateRange) -> dict[str, Any]:
    reports = await asyncio.gather(*(table_report(redis, team, days, table) for table in TABLES))
    budget = (await team_budgets(redis, [team]))[team]
    by_table = dict(zip(TABLES, reports, strict=True))
    return {
        "team": team,
        **days.as_json(),
        "budget": budget.as_json(),
        "totals": by_table["models"].totals.as_json(),
        **{table: rows(report) for table, report in by_table.items()},
        "columns": {table: group_columns(TABLES[table])[1:] for table in TABLES},
    }


async def table_csv(redis: Any, team: str, days: DateRange, table: str) -> str:
    return (await table_report(redis, team, days, table)).to_csv()
