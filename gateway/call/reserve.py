"""Step 3: authenticate the key and hold what the call may cost, in one Redis round trip."""

from __future__ import annotations

from redis.exceptions import RedisError

from gateway import budget
from gateway.budget import Refusal, Reservation
from gateway.call.authenticate import Token
from gateway.call.log import CallLog
from gateway.call.outage import store_unavailable
from gateway.call.refusals import refusal_error
from gateway.call.validate import ImageCall
from gateway.periods import Periods
from gateway.redis_protocol import Redis


async def reserve(
    redis: Redis,
    *,
    call: CallLog,
    token: Token,
    image_call: ImageCall,
    unit_price_micros: int,
    lifetime_ms: int,
    periods: Periods,
) -> Reservation:
    """The reservation, or the error that refuses the call (401, 403, 429, or 503 without Redis)."""
    try:
        held = await budget.reserve(
            redis,
            key_id=token.key_id,
            secret_hash=token.secret_hash,
            model=image_call.model,
            request_id=call.request_id,
            max_images=image_call.max_images,
            unit_price_micros=unit_price_micros,
            lifetime_ms=lifetime_ms,
            periods=periods,
        )
    except (RedisError, OSError) as exc:
        raise store_unavailable(exc) from None
    if isinstance(held, Refusal):
        call.team = held.team or "unknown"
        if held.team is not None:  # a known key refused by a limit: ops want to know which
            call.key_id = token.key_id
        raise refusal_error(held, image_call.model)
    call.team, call.key_id = held.team, token.key_id
    return held
