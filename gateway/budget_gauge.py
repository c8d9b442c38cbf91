"""``gateway_budget_used_ratio`` read from Redis at scrape time, not only when a call settles.

Set only by settle, the gauge was missing for every key after a restart (blinding the near-budget
alert and the dashboard) and kept last period's value after a period reset. A scrape therefore
refreshes it from Redis for every key with a budget.

Bounded cost: at most one refresh per ``REFRESH_S`` seconds per worker (scrapes in between show
the last values), over at most ``MAX_KEYS`` keys (in key_id order), as two pipelined passes:
one HMGET per key record, then one MGET of its three spent counters per key with a budget. So a
refresh is at most 2 x MAX_KEYS commands in pipelines of ``ledger.PIPELINE_CHUNK``.

Multiprocess: the gauge's mode is ``mostrecent``, so whichever worker refreshed last is what the
aggregated page shows; every worker reads the same Redis, so they agree anyway.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway import metrics
from gateway.ledger import _pipelined, registered_keys
from gateway.periods import Periods
from gateway.redis_keys import KeySpace

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
            for (team, name), ratio in (await used_ratios(redis, self.max_keys)).items():
                metrics.BUDGET_USED.labels(team, name).set(ratio)
        except Exception as exc:
            log.warning("budget gauge not refreshed: %s: %s", exc.__class__.__name__, exc)


async def used_ratios(redis: Any, max_keys: int) -> dict[tuple[str, str], float]:
    """(team, key name) -> spent / budget in the key's current period, for keys with a budget."""
    periods = Periods.now()
    key_ids = (await registered_keys(redis))[:max_keys]
    fields = ("budget_micros", "budget_period", "team", "name")
    records = ((k, ("hmget", KeySpace(k).record, *fields)) for k in key_ids)
    budgeted: dict[str, tuple[int, str, str, str]] = {}
    async for key_id, (budget, period, team, name) in _pipelined(redis, records):
        if budget is not None and int(budget) > 0 and team is not None:
            budgeted[key_id] = (int(budget), _text(period or b"total"), _text(team), _text(name or b""))
    counters = (
        (k, ("mget", *(KeySpace(k).spent(p) for p in (f"d{periods.day}", f"m{periods.month}", "total"))))
        for k in budgeted
    )
    ratios: dict[tuple[str, str], float] = {}
    async for key_id, (day, month, total) in _pipelined(redis, counters):
        budget, period, team, name = budgeted[key_id]
        spent = {"day": day, "month": month}.get(period, total)
        ratios[(team, name)] = int(spent or 0) / budget
    return ratios


GAUGE = BudgetGauge()  # one per process: each worker refreshes on the scrapes it answers


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
