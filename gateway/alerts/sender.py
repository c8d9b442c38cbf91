"""The alert sender: one loop per gateway process, of which only the lock holder delivers.

Every ``poll_s`` the holder of the leader lock reads the due alerts of the teams in the index
(and, every ``sweep_s`` and at start, of every registered team: a lost index entry costs at most
one sweep), POSTs each, and then:

- 2xx: removes it (ZREM + HDEL in one MULTI) and remembers its id in memory, so a removal that
  failed is retried instead of the POST;
- anything else, a timeout or an unreachable receiver: counts the attempt and schedules the next
  after ``retry_first_s`` doubled per attempt, at most ``retry_max_s``;
- older than ``max_age_s`` (e.g. queued while no URL was set): dropped unsent, outcome expired.

Delivery is at least once: a sender that dies between the receiver's 2xx and the removal, or
that loses the lock mid-POST, leaves the alert to be sent again; the ``id`` lets receivers drop
the duplicate. Order between alerts is not guaranteed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from gateway.alerts import message, outbox
from gateway.alerts.leader import LeaderLock
from gateway.alerts.outbox import QueuedAlert
from gateway.alerts.webhook import Webhook
from gateway.core import background, metrics
from gateway.core.settings import Settings
from gateway.store.protocol import Redis

log = logging.getLogger("gateway.alerts")

POLL_S = 1.0
SWEEP_S = 60.0
RETRY_FIRST_S = 2.0
RETRY_MAX_S = 300.0
BATCH = 100  # due alerts read per team and pass
CONCURRENCY = 8  # POSTs in flight at once: a receiver that hangs does not hold up the rest
DELIVERED_MEMORY = 10_000


def retry_delay_s(attempts: int, first_s: float = RETRY_FIRST_S, max_s: float = RETRY_MAX_S) -> float:
    """Wait before the next attempt after ``attempts`` failed ones: 2, 4, 8, ... s, at most 5 min."""
    return float(min(max_s, first_s * 2 ** max(0, min(attempts - 1, 30))))


class AlertSender:
    def __init__(
        self,
        redis: Redis,
        webhook: Webhook,
        owner: str,
        *,
        max_age_s: float,
        poll_s: float = POLL_S,
        sweep_s: float = SWEEP_S,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.redis = redis
        self.webhook = webhook
        self.lock = LeaderLock(redis, owner)
        self.max_age_ms = int(max_age_s * 1000)
        self.poll_s = poll_s
        self.sweep_s = sweep_s
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        # (team, id) delivered: if the removal failed, it is retried instead of the POST
        self._delivered: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._waiting: dict[tuple[str, str], int] = {}  # (team, id) tried, not delivered -> at_ms
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0
        self._last_error = ""

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="alert-sender")

    async def stop(self) -> None:
        await background.cancel(self._task)
        try:
            await self.lock.release()  # another process takes over at its next poll
        except Exception as exc:
            log.debug("alert sender lock not released: %s", exc.__class__.__name__)
        await self.webhook.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
                self._last_error = ""
            except Exception as exc:  # Redis down, say: try again at the next poll
                error = f"{exc.__class__.__name__}: {exc}"
                if error != self._last_error:  # one log line per new problem, not one per second
                    log.warning("alert sender pass failed: %s", error)
                    self._last_error = error
            await asyncio.sleep(self.poll_s)

    async def run_once(self) -> None:
        """One pass: deliver what is due if this process is the sender, else stand by."""
        if not await self.lock.hold():
            self._stand_by()
            return
        teams = await outbox.indexed_teams(self.redis)
        if time.monotonic() >= self._next_sweep:
            teams |= await outbox.teams_with_alerts(self.redis)
            self._next_sweep = time.monotonic() + self.sweep_s
        now_ms = int(time.time() * 1000)
        due: list[QueuedAlert] = []
        for team in sorted(teams):
            due.extend(await outbox.due(self.redis, team, now_ms, BATCH))
        limit = asyncio.Semaphore(CONCURRENCY)

        async def handle(alert: QueuedAlert) -> None:
            async with limit:
                await self._handle(alert)

        outcomes = await asyncio.gather(*map(handle, due), return_exceptions=True)
        for alert, outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, Exception):  # Redis failed mid-way: this one is retried next pass
                problem = f"{outcome.__class__.__name__}: {outcome}"
                log.warning("alert %s of team %s: %s", alert.alert_id, alert.team, problem)
        for team in sorted(teams):
            if not await outbox.unindex_if_empty(self.redis, team):
                self._forget_team(team)
        oldest = min(self._waiting.values(), default=None)
        metrics.ALERT_OLDEST_PENDING.set(0 if oldest is None else max(0.0, time.time() - oldest / 1000))

    async def _handle(self, alert: QueuedAlert) -> None:
        if (alert.team, alert.alert_id) in self._delivered:  # sent already; only its removal failed
            await outbox.remove(self.redis, alert.team, alert.alert_id)
            return
        try:
            if alert.facts is None:
                raise ValueError("no body")
            facts = message.AlertFacts.from_json(alert.facts)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("alert %s of team %s dropped: unreadable (%s)", alert.alert_id, alert.team, exc)
            await outbox.remove(self.redis, alert.team, alert.alert_id)
            return
        age_ms = int(time.time() * 1000) - facts.at_ms
        if age_ms > self.max_age_ms:
            await outbox.remove(self.redis, alert.team, alert.alert_id)
            self._waiting.pop((alert.team, alert.alert_id), None)
            metrics.ALERT_DELIVERIES.labels("expired").inc()
            log.warning(
                "alert %s of team %s expired unsent after %d attempts",
                alert.alert_id,
                alert.team,
                alert.attempts,
            )
            return
        self._waiting[(alert.team, alert.alert_id)] = facts.at_ms
        raw = message.body(alert.alert_id, facts)
        if not await self.lock.renew():  # another process took over: it sends this one
            return
        status = await self.webhook.post(raw)
        if status is not None and 200 <= status < 300:
            await self._delivered_now(alert)
            return
        metrics.ALERT_DELIVERIES.labels("failed").inc()
        delay_s = retry_delay_s(alert.attempts + 1, self.retry_first_s, self.retry_max_s)
        log.warning(
            "alert %s of team %s not delivered (%s), attempt %d; next in %.0f s",
            alert.alert_id,
            alert.team,
            "no answer" if status is None else f"status {status}",
            alert.attempts + 1,
            delay_s,
        )
        next_ms = int((time.time() + delay_s) * 1000)
        await outbox.postpone(self.redis, alert.team, alert.alert_id, next_ms)

    async def _delivered_now(self, alert: QueuedAlert) -> None:
        metrics.ALERT_DELIVERIES.labels("delivered").inc()
        self._waiting.pop((alert.team, alert.alert_id), None)
        self._delivered[(alert.team, alert.alert_id)] = None
        while len(self._delivered) > DELIVERED_MEMORY:
            self._delivered.popitem(last=False)
        log.info("alert %s of team %s delivered", alert.alert_id, alert.team)
        await outbox.remove(self.redis, alert.team, alert.alert_id)  # if it fails: retried above

    def _forget_team(self, team: str) -> None:
        for entry in [e for e in self._waiting if e[0] == team]:
            del self._waiting[entry]

    def _stand_by(self) -> None:
        self._waiting.clear()  # the sender's own view; another process has it now
        metrics.ALERT_OLDEST_PENDING.set(0)


def from_settings(redis: Redis, settings: Settings, owner: str) -> AlertSender | None:
    """The process's sender, or None without ``GATEWAY_ALERT_WEBHOOK_URL`` (alerts wait queued)."""
    if settings.alert_webhook_url is None or settings.alert_webhook_secret is None:
        return None
    secret = settings.alert_webhook_secret.get_secret_value().encode()
    webhook = Webhook(str(settings.alert_webhook_url), secret, settings.alert_webhook_timeout_s)
    return AlertSender(redis, webhook, owner, max_age_s=settings.alert_max_age_s)
