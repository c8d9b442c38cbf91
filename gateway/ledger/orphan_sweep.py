"""Release reservations whose process died, for every team, even one nobody calls again.

The reserve and usage scripts release a team's orphaned reservations (with an ``orphaned``
ledger record each) whenever the team is used or read. A team that is never used again would
keep its dead holds and never get their records, so every gateway process also sweeps all teams
every ``GATEWAY_ORPHAN_SWEEP_S``: one pipelined look at each team's earliest deadline, then the
team usage script (which releases) for the teams that have one due. Running it from several
processes at once is harmless: the release is atomic and a released reservation is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.core import background
from gateway.money import budget
from gateway.money.periods import Periods
from gateway.store.keyspace import TeamSpace
from gateway.store.pipelined import pipelined
from gateway.store.registry import registered_teams

log = logging.getLogger("gateway")


async def sweep_once(redis: Any) -> int:
    """Release every team's overdue reservations; answers how many teams had some."""
    now_ms = int(time.time() * 1000)
    teams = await registered_teams(redis)
    looks = ((t, ("zrangebyscore", TeamSpace(t).reservation_deadlines, "-inf", now_ms, 0, 1)) for t in teams)
    due = [team async for team, found in pipelined(redis, looks) if found]
    for team in due:
        await budget.team_usage(redis, TeamSpace(team), Periods.now())
    return len(due)


class OrphanSweeper:
    """Runs :func:`sweep_once` every ``every_s`` seconds in the background."""

    def __init__(self, redis: Any, every_s: float) -> None:
        self.redis = redis
        self.every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="orphan-sweep")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                swept = await sweep_once(self.redis)
                if swept:
                    log.info("released overdue reservations of %d teams", swept)
            except Exception as exc:  # Redis away: the next round tries again
                log.debug("orphan sweep postponed: %s", exc.__class__.__name__)

    async def aclose(self) -> None:
        await background.cancel(self._task)
