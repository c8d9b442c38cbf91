"""``gateway_budget_used_ratio`` (and whether the budget is used up) read from Redis at scrape
time, not only when a call settles.

Set only by settle, the gauge was missing for every key after a restart (blinding the near-budget
alert and the dashboard) and kept last period's value after a period reset. A scrape therefore
refreshes it from Redis for every key with a budget.

Bounded cost: at most one refresh per ``REFRESH_S`` seconds per worker (scrapes in between show
the last values), over at most ``MAX_KEYS`` keys (in key_id order), as three pipelined passes:
the directory (the key's team), one HMGET per key record, then one MGET of its three spent
counters per key with a budget; teams the same way (``gateway_team_budget_used_ratio``). So a
refresh is at most 3 x MAX_KEYS + 2 x MAX_KEYS commands in pipelines of
``pipelined.PIPELINE_CHUNK``.

Multiprocess: the gauge's mode is ``mostrecent``, so whichever worker refreshed last is what the
aggregated page shows; every worker reads the same Redis, so they agree anyway.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.core import metrics
from gateway.money.periods import Periods
from gateway.store.directory import spaces_of
from gateway.store.keyspace import TeamSpace
from gateway.store.pipelined import pipelined
from gateway.store.protocol import text
from gateway.store.registry import registered_keys, registered_teams

log = logging.getLogger("gateway.metrics")

REFRESH_S = 15.0
MAX_KEYS = 5000


class BudgetGauge:
    """Refreshes :data:`metrics.BUDGET_USED` from Redis, at most once per ``refresh_s``."""

    def __init__(self, refresh_s: float = REFRESH_S, max_keys: int = MAX_KEYS) -> None:
        self.refresh_s = refresh_s
        self.max_keys = max_keys
        self._last = float("-inf")

    async def refresh(self, redis: Any) -> None:
        """Never fails a scrape: with Redis unreachable the gauge keeps its last values."""
        now = time.monotonic()
        if now - self._last < self.refresh_s:
            return
        self._last = now
        try:
            for (team, name), use in (await used_ratios(redis, self.max_keys)).items():
                metrics.BUDGET_USED.labels(team, name).set(use.ratio)
                metrics.BUDGET_EXHAUSTED.labels(team, name).set(int(use.exhausted))
            for team, use in (await team_used_ratios(redis, self.max_keys)).items():
                metrics.TEAM_BUDGET_USED.labels(team).set(use.ratio)
                metrics.TEAM_BUDGET_EXHAUSTED.labels(team).set(int(use.exhausted))
        except Exception as exc:
            log.warning("budget gauge not refreshed: %s: %s", exc.__class__.__name__, exc)


@dataclass(frozen=True)
class BudgetUse:
    ratio: float  # spent / budget in the current period
    exhausted: bool  # used up for the period (spent reached it, or it refused a call it could not cover)

    def merged(self, other: BudgetUse | None) -> BudgetUse:
        """Two keys of one team with one name are one series: the fuller of the two."""
        if other is None:
            return self
        return BudgetUse(max(self.ratio, other.ratio), self.exhausted or other.exhausted)


def _use(budget: int, period: str, day: Any, month: Any, total: Any, mark: Any) -> BudgetUse:
    spent = int({"day": day, "month": month}.get(period, total) or 0)
    return BudgetUse(spent / budget, exhausted(budget, spent, mark))


def exhausted(budget: int, spent: int, mark: Any) -> bool:
    """common.lua's ``exhausted``: spent reached the budget, or the budget refused a call with
    less than one image left (reserve.lua's mark holds the budget it had then; raised since: no)."""
    if budget < 0:
        return False
    return spent >= budget or (mark is not None and int(mark) >= budget)


async def used_ratios(redis: Any, max_keys: int) -> dict[tuple[str, str], BudgetUse]:
    """(team, key name) -> the key's budget use in its current period, for keys with a budget."""
    periods = Periods.now()
    spaces = await spaces_of(redis, (await registered_keys(redis))[:max_keys])
    fields = ("budget_micros", "budget_period", "team", "name")
    records = ((k, ("hmget", space.record, *fields)) for k, space in spaces.items())
    budgeted: dict[str, tuple[int, str, str, str]] = {}
    async for key_id, (budget, period, team, name) in pipelined(redis, records):
        if budget is not None and int(budget) > 0 and team is not None:
            budgeted[key_id] = (int(budget), text(period or b"total"), text(team), text(name or b""))
    ids = (f"d{periods.day}", f"m{periods.month}", "total")

    def counters(key_id: str) -> tuple[str, ...]:
        space, period = spaces[key_id], budgeted[key_id][1]
        mark = space.team_space.exhausted(f"key:{key_id}", periods.period_id(period))
        return ("mget", *(space.spent(p) for p in ids), mark)

    uses: dict[tuple[str, str], BudgetUse] = {}
    async for key_id, values in pipelined(redis, ((k, counters(k)) for k in budgeted)):
        budget, period, team, name = budgeted[key_id]
        uses[(team, name)] = _use(budget, period, *values).merged(uses.get((team, name)))
    return uses


async def team_used_ratios(redis: Any, max_teams: int) -> dict[str, BudgetUse]:
    """team -> the team's budget use in its current period, for teams with a budget."""
    periods = Periods.now()
    teams = (await registered_teams(redis))[:max_teams]
    settings = ((t, ("hmget", TeamSpace(t).settings, "budget_micros", "budget_period")) for t in teams)
    budgeted: dict[str, tuple[int, str]] = {}
    async for team, (budget, period) in pipelined(redis, settings):
        if budget is not None and int(budget) > 0:
            budgeted[team] = (int(budget), text(period or b"month"))
    ids = (f"d{periods.day}", f"m{periods.month}", "total")

    def counters(team: str) -> tuple[str, ...]:
        space = TeamSpace(team)
        mark = space.exhausted("team", periods.period_id(budgeted[team][1]))
        return ("mget", *(space.spent(p) for p in ids), mark)

    uses: dict[str, BudgetUse] = {}
    async for team, values in pipelined(redis, ((t, counters(t)) for t in budgeted)):
        budget, period = budgeted[team]
        uses[team] = _use(budget, period, *values)
    return uses


GAUGE = BudgetGauge()  # one per process: each worker refreshes on the scrapes it answers
