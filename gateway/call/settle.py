"""Step 5: charge what was delivered and write the usage record, or spool it if Redis is gone.

The caller already has its images when Redis may fail; the settlement then waits in the local
spool and is replayed (exactly once: settle.lua ignores a request id it settled within
``budget.SETTLED_MEMORY_MS``) by whichever process of the directory replays first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
from redis.exceptions import ResponseError

from gateway.alerts import outbox
from gateway.call.log import CallLog
from gateway.call.outage import note_store_failure
from gateway.core import background, metrics
from gateway.money import budget
from gateway.money.budget import Reservation, Settlement
from gateway.money.micros import charge_micros, chargeable
from gateway.money.periods import Periods
from gateway.money.spool import RecordForeign, RecordRefused, Spool
from gateway.money.usage_record import UsageRecord
from gateway.store.keyspace import KeySpace
from gateway.store.protocol import Redis
from gateway.store.store_id import read_store_id

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class SettleOrder:
    """One settlement as settle.lua takes it, and as the spool keeps it (JSON, one per line)."""

    key_id: str
    request_id: str
    model: str
    images: int
    charge_micros: int
    day: str  # the periods the call was reserved in
    month: str
    record: UsageRecord
    # The id of the store this settlement belongs to (store/store_id.py), set when it is spooled.
    # None: spooled before the process could read it; such an entry, and one of the release
    # before (no "store" at all), is replayed into whichever store the replayer is connected to.
    store: str | None = None
    # The records of the attempts the call moved on from (another channel was tried after them),
    # written before the call's own; charged nothing.
    attempts: tuple[UsageRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> SettleOrder:
        """Read a spooled order, including one spooled by the release before charges moved here."""
        record = dict(entry["record"])
        if "charge_micros" not in entry:  # before this release: the script priced the images
            record["unit_price_micros"] = entry["unit_price_micros"]
            record["charge_micros"] = charge_micros(entry["images"], entry["unit_price_micros"])
        record.setdefault("upstream_images", -1)
        record.setdefault("cost_micros", record["charge_micros"])  # before channels: cost was price
        fields = {k: entry[k] for k in ("key_id", "request_id", "model", "images", "day", "month")}
        return cls(
            **fields,
            charge_micros=record["charge_micros"],
            record=UsageRecord(**record),
            store=entry.get("store"),
            attempts=tuple(UsageRecord(**attempt) for attempt in entry.get("attempts", ())),
        )


def order_for(
    call: CallLog,
    *,
    key_id: str,
    held: Reservation,
    unit_price_micros: int,
    periods: Periods,
    reconcile: bool,
    outcome: str | None = None,
) -> SettleOrder:
    """The settlement of a finished call; sets the call's charge, the one the ledger will show.

    ``call.images`` is what was delivered; the charge stops at what ``held`` reserved, and the
    images beyond it are recorded as over-delivered, to reconcile. Its cost is the channel's cost
    of the images charged, or the charge where the channel has none.
    """
    images, over_delivered = chargeable(call.images, held.images)
    call.charge_micros = charge_micros(images, unit_price_micros)
    unit_cost = call.unit_cost_micros
    record = UsageRecord(
        request_id=call.request_id,
        ts_ms=int(time.time() * 1000),
        day=periods.day,
        team=held.team,
        key_id=key_id,
        key_name=held.key_name,
        model=call.model,
        n=call.n,
        images=images,
        upstream_images=-1 if call.upstream_images is None else call.upstream_images,
        unit_price_micros=unit_price_micros,
        charge_micros=call.charge_micros,
        upstream_status=call.upstream_status or 0,
        upstream_latency_ms=int((call.upstream_latency_s or 0) * 1000),
        outcome=outcome or call.upstream_outcome or "unknown",
        client_left=int(call.client_left),
        stream=int(call.stream),
        user=call.user,
        reconcile=int(reconcile or over_delivered > 0),
        over_delivered=over_delivered,
        channel=call.channel,
        cost_micros=call.charge_micros if unit_cost is None else charge_micros(images, unit_cost),
        attempt=call.attempt,
    )
    # An attempt that got no answer was never sent (else the call would not have moved on): no record.
    attempts = tuple(
        replace(
            record,
            images=0,
            upstream_images=-1,
            charge_micros=0,
            upstream_status=failed.status,
            upstream_latency_ms=int(failed.latency_s * 1000),
            outcome=failed.outcome,
            client_left=0,
            reconcile=0,
            over_delivered=0,
            channel=failed.channel,
            cost_micros=0,
            attempt=failed.attempt,
            failed_over=1,
        )
        for failed in call.failovers
        if failed.status
    )
    return SettleOrder(
        key_id,
        call.request_id,
        call.model,
        images,
        call.charge_micros,
        periods.day,
        periods.month,
        record,
        attempts=attempts,
    )


class Settler:
    """Settles finished calls in Redis, spools them when it cannot, and replays the spool."""

    def __init__(self, redis: Redis, spool: Spool, retention_days: int) -> None:
        self.redis = redis
        self.spool = spool
        self.retention_days = retention_days
        self.store_id: str | None = None  # learnt at start-up, or by a replay round
        self._reported_foreign = 0  # foreign records last logged: a log line per change only
        self._replay_task: asyncio.Task[None] | None = None
        # Replay waits until this says yes: in a gateway, until its store's layout is confirmed
        # (a settlement must not land in today's names of a store not yet moved).
        self.replay_gate: Callable[[], bool] = lambda: True

    async def learn_store_id(self) -> str | None:
        """This process's store id; None while Redis cannot be asked (a later round asks again)."""
        if self.store_id is None:
            try:
                self.store_id = await read_store_id(self.redis)
            except Exception as exc:  # an outage at start-up: the replay rounds ask again
                log.debug("store id not known yet: %s", exc.__class__.__name__)
        return self.store_id

    async def settle(self, order: SettleOrder) -> Settlement | None:
        """The key's budget after the charge; None if spooled (the caller gets its images anyway)."""
        try:
            settled = await self._apply(order)
        except Exception as exc:  # any failure, not only RedisError: the record must not be lost
            note_store_failure(exc)
            self._spool(order)
            return None
        if settled is not None and settled.budget_micros > 0:
            ratio = settled.spent_micros / settled.budget_micros
            metrics.BUDGET_USED.labels(order.record.team, order.record.key_name).set(ratio)
        return settled

    async def _apply(self, order: SettleOrder) -> Settlement | None:
        settled = await budget.settle(
            self.redis,
            # The record's team is the key's (a key never changes team), in orders spooled by
            # the release before team budgets too.
            space=KeySpace(order.key_id, order.record.team),
            request_id=order.request_id,
            model=order.model,
            images=order.images,
            charge_micros=order.charge_micros,
            periods=Periods(order.day, order.month),
            retention_days=self.retention_days,
            record_fields=order.record.stream_fields(),
            user=order.record.user,
            over_delivered=order.record.over_delivered,
            attempt_records=[attempt.stream_fields() for attempt in order.attempts],
        )
        if settled is not None and settled.alerts_queued > 0:
            await self._index_alerts(order.record.team)
        if settled is not None and settled.over_delivered > 0:
            record = order.record
            metrics.OVER_DELIVERED.labels(record.model, record.team).inc(settled.over_delivered)
            log.warning(
                "request %s: the upstream delivered %d images beyond the call's reservation (key "
                "%s): not charged, recorded for reconciliation",
                order.request_id,
                settled.over_delivered,
                order.key_id,
            )
        if settled is not None and settled.over_budget:
            metrics.LATE_OVERSPENDS.labels(order.record.team, order.record.key_name).inc()
            log.error(
                "late settlement %s took key %s past its budget: its reservation had lapsed",
                order.request_id,
                order.key_id,
            )
        return settled

    async def _index_alerts(self, team: str) -> None:
        """Tell the alert sender where to look; if this is lost, its periodic sweep finds the team.

        Never raises: the settlement itself is done, and must not be spooled again for this.
        """
        try:
            await outbox.mark_pending(self.redis, team)
        except Exception as exc:
            log.warning("team %s not indexed for alerts (the sweep finds it): %s", team, exc)

    def _spool(self, order: SettleOrder) -> None:
        try:
            self.spool.append(replace(order, store=self.store_id).to_json())
        except OSError:  # disk full, read-only: the log line is the record of last resort
            log.exception("could not spool settlement %s", orjson.dumps(order.to_json()).decode())
            return
        metrics.SPOOL_PENDING.inc()

    # -- the spool's replay -------------------------------------------------------------------

    def start_replay(self, every_s: float = 1.0) -> None:
        self._replay_task = asyncio.create_task(self._replay_loop(every_s), name="spool-replay")

    async def stop_replay(self) -> None:
        await background.cancel(self._replay_task)
        try:
            await self.replay()
        except Exception:
            pass  # the spool stays on disk; the next start (or any other replica) replays it

    async def replay(self) -> int:
        """Replay the whole spool directory, this process's file and any other's.

        The pending gauge is then set from the files themselves, not counted up and down: a
        process that replays another one's records would otherwise go negative.
        """
        try:
            if await self.learn_store_id() is None or not self.replay_gate():
                return 0  # cannot tell whose records are whose: Redis is unreachable anyway
            return await self.spool.replay(self._replay_entry)
        finally:
            metrics.SPOOL_PENDING.set(self.spool.pending())
            self._report_foreign()

    def _report_foreign(self) -> None:
        foreign = self.spool.foreign
        metrics.SPOOL_FOREIGN.set(foreign)
        if foreign != self._reported_foreign:
            self._reported_foreign = foreign
            if foreign:
                log.error(
                    "%d spooled settlements belong to another Redis store than this one (%s): kept,"
                    " not replayed; a gateway connected to their store replays them",
                    foreign,
                    self.store_id,
                )

    async def _replay_entry(self, entry: dict[str, Any]) -> None:
        store = entry.get("store")
        if store is not None and store != self.store_id:
            raise RecordForeign(store)
        try:
            await self._apply(SettleOrder.from_json(entry))
        except ResponseError as exc:  # Redis answered and refused this one: not an outage
            raise RecordRefused(str(exc)) from exc

    async def _replay_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.replay()
            except Exception as exc:  # never let the loop die: the spool would wait forever
                log.debug("spool replay postponed: %s", exc.__class__.__name__)
