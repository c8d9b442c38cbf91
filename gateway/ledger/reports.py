"""Spend reports: calls, images, spend, cost and margin grouped by team, key, model, day, end
user and upstream channel.

They read the rollups settle.lua keeps per team and UTC day, in the same atomic step that
charges a call, never the usage records: by team, model or day one small hash per team and day
(``rollup``, per model), so a year is teams x 365 HGETALLs (pipelined) however many keys were
ever issued; by key the per-key rollups of the same days (``keyroll``: they grow with the keys
that spent on those days) and the names of those keys; by user the per-user rollups as well
(``users``). Every rollup field names its channel (money/rollups.py), so a report by channel
reads the same hashes. Money is summed as integer micro-USD and printed with :func:`micros_to_usd`;
the cost is the spend less the margin settle.lua adds up (a rollup from before costs: the spend).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.ledger.csv_cells import csv_safe
from gateway.ledger.query import DateRange, LedgerQueryError
from gateway.money.rollups import AMOUNT_COLUMNS, Amounts, parse_keyed_rollup, parse_rollup, parse_user_rollup
from gateway.store import scripts
from gateway.store.keyspace import KeySpace, TeamSpace
from gateway.store.pipelined import pipelined
from gateway.store.protocol import text
from gateway.store.registry import registered_teams

GROUP_FIELDS = ("team", "key", "model", "day", "user", "channel")
DEFAULT_GROUP_BY = ("team",)


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """``team,key,model,day,user,channel`` in any order and subset (``""``: totals only); default
    ``team``."""
    if text is None:
        return DEFAULT_GROUP_BY
    fields: list[str] = []
    for name in (part.strip().lower() for part in text.split(",")):
        if not name:
            continue
        if name not in GROUP_FIELDS:
            raise LedgerQueryError(
                f"'group_by' takes {', '.join(GROUP_FIELDS)}, comma-separated; not {name!r}.", "group_by"
            )
        if name not in fields:
            fields.append(name)
    return tuple(fields)


def group_columns(group_by: Sequence[str]) -> list[str]:
    """The columns of the group fields: ``key`` is shown as its key_id and its name."""
    columns: list[str] = []
    for name in group_by:
        columns += ["key_id", "key_name"] if name == "key" else [name]
    return columns


# -- spend report ----------------------------------------------------------------------------------




@dataclass
class SpendReport:
    """Calls, images and spend per group, and their totals, for a range of days."""

    range: DateRange
    group_by: tuple[str, ...]
    rows: dict[tuple[str, ...], Amounts] = field(default_factory=dict)
    totals: Amounts = field(default_factory=Amounts)

    @property
    def columns(self) -> list[str]:
        return [*group_columns(self.group_by), *AMOUNT_COLUMNS]

    def add(self, group: tuple[str, ...], amounts: Amounts) -> None:
        if self.group_by:  # grouped by nothing: the totals alone
            self.rows.setdefault(group, Amounts()).add(amounts)
        self.totals.add(amounts)

    def sorted_rows(self) -> list[tuple[tuple[str, ...], Amounts]]:
        return sorted(self.rows.items())

    def as_json(self) -> dict[str, Any]:
        names = group_columns(self.group_by)
        return {
            "object": "spend_report",
            **self.range.as_json(),
            "group_by": list(self.group_by),
            "currency": "USD",
            "data": [
                {**dict(zip(names, group, strict=True)), **amounts.as_json()}
                for group, amounts in self.sorted_rows()
            ],
            "totals": self.totals.as_json(),
        }

    def table(self) -> list[list[str]]:
        """Rows as cells, then a totals row (``TOTAL`` in the first group column)."""
        rows = [[*group, *amounts.cells()] for group, amounts in self.sorted_rows()]
        width = len(group_columns(self.group_by))
        label = ["TOTAL", *([""] * (width - 1))] if width else []
        return [*rows, [*label, *self.totals.cells()]]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        writer.writerows([csv_safe(cell) for cell in row] for row in self.table())
        return out.getvalue()


async def spend_report(
    redis: Any,
    days: DateRange,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    teams: Collection[str] | None = None,
) -> SpendReport:
    """Sum the teams' daily rollups for every day of ``days``, grouped by ``group_by``; only
    ``teams`` if given (one team's report, or a team-admin's: the others are not read at all).

    By team, model or day it reads one small hash per team and day (per model), whatever the
    number of keys ever issued; by key it reads the per-key rollups of the same days and the names
    of the keys that spent; by user, the per-user rollups as well. ``teams``: only these teams'
    (default: every team's).
    """
    report = SpendReport(days, tuple(group_by))
    read = [team for team in await registered_teams(redis) if teams is None or team in teams]
    if "user" in report.group_by:
        rows = _user_rows(redis, read, days)
    elif "key" in report.group_by:
        rows = _key_rows(redis, read, days)
    else:
        rows = _team_rows(redis, read, days, by_day="day" in report.group_by)
    found = [row async for row in rows]
    names = await _key_names(redis, {(r.team, r.key_id) for r in found}) if "key" in report.group_by else {}
    for row in found:
        values = {
            "team": (row.team,),
            "key": (row.key_id, names.get(row.key_id, "")),
            "model": (row.model,),
            "day": (row.day,),
            "user": (row.user,),
            "channel": (row.channel,),
        }
        report.add(tuple(v for name in report.group_by for v in values[name]), row.amounts)
    return report


TeamDay = tuple[tuple[str, str], dict[bytes, bytes]]


@dataclass(frozen=True)
class RollupRow:
    """One rollup entry: a team's calls of one day, for one model and channel (and key, and user,
    if read)."""

    team: str
    day: str
    model: str
    channel: str
    amounts: Amounts
    key_id: str = ""
    user: str = ""


# Rollups one script call reads: a month of hashes handed back whole, a year of small per-model
# hashes summed in the script; either way Redis is held for a millisecond or so.
DAYS_PER_READ = 31
DAYS_PER_SUM = 366
READS_AT_ONCE = 16  # script calls in flight: a few round trips' worth, within the connection bound


async def _team_days(
    redis: Any, teams: list[str], days: DateRange, name: str, by_day: bool = True
) -> AsyncIterator[TeamDay]:
    """Every (team, day) of one kind of the team's rollups (``rollup``, ``key_rollup``, ``users``)
    that has data, with its fields: a month of one team per script call (rollups.lua), a few calls
    at a time, rather than one command per team and day, which would pay redis-py's per-command
    cost 365 times a team for a year. Not ``by_day``, the script sums up to a year itself, and the
    day given is the first."""
    every_day = days.days()
    step = DAYS_PER_READ if by_day else DAYS_PER_SUM
    reads = [(team, every_day[i : i + step]) for team in teams for i in range(0, len(every_day), step)]
    for start in range(0, len(reads), READS_AT_ONCE):
        batch = reads[start : start + READS_AT_ONCE]
        answers = await asyncio.gather(
            *(_read_days(redis, team, chunk, name, by_day) for team, chunk in batch)
        )
        for found in answers:
            for item in found:
                yield item


async def _read_days(redis: Any, team: str, chunk: list[str], name: str, by_day: bool) -> list[TeamDay]:
    space = TeamSpace(team)
    mode = "each" if by_day else "sum"
    reply = await scripts.ROLLUPS(redis, [getattr(space, name)(day) for day in chunk], [mode])
    found: list[TeamDay] = []
    for i in range(0, len(reply), 2):
        fields = reply[i + 1]
        raw = {fields[j]: fields[j + 1] for j in range(0, len(fields), 2)}
        found.append(((team, chunk[max(0, int(reply[i]) - 1)]), raw))
    return found


async def _team_rows(redis: Any, teams: list[str], days: DateRange, by_day: bool) -> AsyncIterator[RollupRow]:
    async for (team, day), raw in _team_days(redis, teams, days, "rollup", by_day):
        for (model, channel), amounts in parse_rollup(raw).items():
            yield RollupRow(team, day, model, channel, amounts)


async def _key_rows(redis: Any, teams: list[str], days: DateRange) -> AsyncIterator[RollupRow]:
    async for (team, day), raw in _team_days(redis, teams, days, "key_rollup"):
        for (key_id, model, channel), amounts in parse_keyed_rollup(raw).items():
            yield RollupRow(team, day, model, channel, amounts, key_id=key_id)


async def _user_rows(redis: Any, teams: list[str], days: DateRange) -> AsyncIterator[RollupRow]:
    """Per key, model, channel and user. Every call is in the per-key rollup; those that named a user are
    also in the per-user one, so the calls that named none (user ``""``) are the difference. The
    per-key rollups lead: a team and day where no call named a user has no per-user hash at all,
    and its calls belong in the report all the same (rollups already written read the same way)."""
    named = {
        (team, day): parse_user_rollup(raw)
        async for (team, day), raw in _team_days(redis, teams, days, "users")
    }
    async for (team, day), raw in _team_days(redis, teams, days, "key_rollup"):
        unnamed = parse_keyed_rollup(raw)
        for (key_id, model, channel, user), amounts in named.pop((team, day), {}).items():
            unnamed.setdefault((key_id, model, channel), Amounts()).subtract(amounts)
            yield RollupRow(team, day, model, channel, amounts, key_id=key_id, user=user)
        for (key_id, model, channel), amounts in unnamed.items():
            if amounts.calls or amounts.images or amounts.spend_micros:
                yield RollupRow(team, day, model, channel, amounts, key_id=key_id)
    for (team, day), users in named.items():  # settle.lua writes both: only a hand-edited store
        for (key_id, model, channel, user), amounts in users.items():
            yield RollupRow(team, day, model, channel, amounts, key_id=key_id, user=user)


async def _key_names(redis: Any, keys: set[tuple[str, str]]) -> dict[str, str]:
    """key_id -> its name, for the (team, key_id) pairs a report met ("" if a record is gone)."""
    commands = ((k, ("hget", KeySpace(k, t).record, "name")) for t, k in sorted(keys))
    return {key_id: text(name) if name else "" async for key_id, name in pipelined(redis, commands)}
