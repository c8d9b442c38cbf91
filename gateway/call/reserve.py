"""Step 3: authenticate the key and hold what the call may cost, in one Redis round trip."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from gateway.alerts import outbox
from gateway.call.authenticate import Token
from gateway.call.log import CallLog
from gateway.call.outage import store_unavailable
from gateway.call.refusals import refusal_error
from gateway.call.validate import ImageCall
from gateway.money import budget
from gateway.money.budget import BudgetExhausted, InvalidKey, Refusal, Reservation
from gateway.money.periods import Periods
from gateway.store.directory import KeyDirectory
from gateway.store.keyspace import KeySpace
from gateway.store.protocol import Redis

log = logging.getLogger("gateway")
SHUTDOWN_WAIT_S = 2.0


class ReserveCancels:
    """Cancels, in the background, reserves whose caller was told 503 (see budget.cancel).

    The reserve may still sit queued in a stalled Redis, so the cancel is retried until Redis
    answers it, for as long as a queued reserve could still run (after that the reserve's own
    deadline refuses it).
    """

    def __init__(self, redis: Redis, retry_every_s: float = 0.5) -> None:
        self.redis = redis
        self.retry_every_s = retry_every_s
        self.give_up_after_s = budget.RESERVE_DEADLINE_MS / 1000
        self._tasks: set[asyncio.Task[None]] = set()

    def cancel(self, space: KeySpace, request_id: str) -> None:
        task = asyncio.create_task(self._until_done(space, request_id), name=f"cancel-{request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _until_done(self, space: KeySpace, request_id: str) -> None:
        deadline = time.monotonic() + self.give_up_after_s
        while True:
            try:
                await budget.cancel(self.redis, space=space, request_id=request_id)
                return
            except (RedisError, OSError):
                if time.monotonic() > deadline:
                    log.warning("could not cancel the reserve of %s; its deadline refuses it", request_id)
                    return
                await asyncio.sleep(self.retry_every_s)

    async def aclose(self) -> None:
        """Let pending cancels finish briefly at shutdown (bounded: Redis may be gone)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=SHUTDOWN_WAIT_S)


async def _index_alert(redis: Redis, team: str) -> None:
    """The budget's used-up alert was queued: tell the sender (its sweep finds it if this fails)."""
    try:
        await outbox.mark_pending(redis, team)
    except (RedisError, OSError) as exc:
        log.warning("team %s not indexed for alerts (the sweep finds it): %s", team, exc)


async def reserve(
    redis: Redis,
    *,
    directory: KeyDirectory,
    call: CallLog,
    token: Token,
    image_call: ImageCall,
    unit_price_micros: int,
    lifetime_ms: int,
    periods: Periods,
    cancels: ReserveCancels,
) -> Reservation:
    """The reservation, or the error that refuses the call (401, 403, 429, or 503 without Redis)."""
    try:
        space = await directory.space_of(token.key_id)
    except (RedisError, OSError) as exc:
        raise store_unavailable(exc) from None
    if space is None:  # a key_id never issued
        raise refusal_error(InvalidKey(None, None), image_call.model)
    try:
        held = await budget.reserve(
            redis,
            space=space,
            secret_hash=token.secret_hash,
            model=image_call.model,
            request_id=call.request_id,
            max_images=image_call.max_images,
            unit_price_micros=unit_price_micros,
            lifetime_ms=lifetime_ms,
            periods=periods,
        )
    except (RedisError, OSError) as exc:
        cancels.cancel(space, call.request_id)
        raise store_unavailable(exc) from None
    if isinstance(held, Refusal):
        call.team = held.team or "unknown"
        if held.team is not None:  # a known key refused by a limit: ops want to know which
            call.key_id = token.key_id
        if isinstance(held, BudgetExhausted) and held.alerts_queued and held.team:
            await _index_alert(redis, held.team)
        raise refusal_error(held, image_call.model, token.key_id)
    call.team, call.key_id = held.team, token.key_id
    return held
