"""``gateway_alerts_pending``: every team's alerts waiting in Redis, read when /metrics is scraped.

Set only by the sender before, it read 0 with alerts queued whenever no webhook was configured
(no sender runs then), which is exactly when alerts pile up unseen. A scrape now counts the
outboxes of every registered team (pipelined ZCARDs), at most once per ``REFRESH_S`` seconds
per process; with Redis unreachable the gauge keeps its last value.
"""

from __future__ import annotations

import logging
import time

from gateway.alerts import outbox
from gateway.core import metrics
from gateway.store.keyspace import TeamSpace
from gateway.store.pipelined import pipelined
from gateway.store.protocol import Redis
from gateway.store.registry import registered_teams

log = logging.getLogger("gateway.metrics")

REFRESH_S = 15.0


class PendingGauge:
    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self._last = float("-inf")

    async def refresh(self, redis: Redis) -> None:
        now = time.monotonic()
        if now - self._last < self.refresh_s:
            return
        self._last = now
        try:
            counts = await outbox.pending_counts(redis, await registered_teams(redis))
            metrics.ALERTS_PENDING.set(sum(counts.values()))
        except Exception as exc:
            log.warning("pending alerts not counted: %s: %s", exc.__class__.__name__, exc)


GAUGE = PendingGauge()  # one per process


async def unsent_warning(redis: Redis) -> str | None:
    """For a gateway with no webhook: the warning to log at start if teams have alert thresholds
    (their alerts will only wait in Redis) or alerts already wait; None if neither."""
    teams = await registered_teams(redis)
    settings = ((t, ("hget", TeamSpace(t).settings, "alert_thresholds")) for t in teams)
    alerting = [team async for team, value in pipelined(redis, settings) if value]
    waiting = sum((await outbox.pending_counts(redis, teams)).values())
    if not alerting and not waiting:
        return None
    shown = ", ".join(alerting[:5]) + (f" and {len(alerting) - 5} more" if len(alerting) > 5 else "")
    return (
        f"GATEWAY_ALERT_WEBHOOK_URL is not set, yet {len(alerting)} teams have alert thresholds"
        f"{f' ({shown})' if alerting else ''} and {waiting} alerts wait in Redis: none is sent. "
        "See them with `gateway alerts list`; set the webhook to deliver them."
    )
