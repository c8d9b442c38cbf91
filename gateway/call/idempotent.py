"""``Idempotency-Key`` around reserve, forward and settle: a repeat replays the first result.

The key is authenticated first (a stranger's Idempotency-Key must not reveal another key's
results), then claimed in Redis; the call runs only for the claim's owner. A 200 is kept for
replays; anything else frees the claim so a retry may go ahead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError
from starlette.responses import Response

from gateway.admin.keys import KeyStore
from gateway.call.authenticate import Token, known_key
from gateway.call.ending import Relayed
from gateway.call.log import CallLog
from gateway.call.outage import note_store_failure, store_unavailable
from gateway.money import idempotency
from gateway.money.micros import micros_to_usd
from gateway.store.keyspace import KeySpace
from gateway.store.protocol import Redis


async def run_once(
    generate: Callable[[], Awaitable[Response]],
    *,
    redis: Redis,
    keys: KeyStore,
    call: CallLog,
    token: Token,
    idempotency_key: str,
    body: bytes,
    pending_ms: int,
    keep_s: int,
) -> Response:
    """Replay the first result of a repeated Idempotency-Key; otherwise generate and keep it."""
    idempotency.check_key(idempotency_key)
    call.team = (await known_key(keys, token))["team"]
    call.key_id = token.key_id
    space = KeySpace(token.key_id, call.team)
    try:
        replay = await idempotency.begin(
            redis,
            space=space,
            idempotency_key=idempotency_key,
            body=body,
            pending_ms=pending_ms,
            request_id=call.request_id,
        )
    except (RedisError, OSError) as exc:
        raise store_unavailable(exc) from None
    if replay is not None:
        call.extra["idempotent_replay"] = True
        # Nothing was charged for the replay: the first call's cost header would count it twice.
        headers = {**replay.headers, "x-gateway-cost-usd": micros_to_usd(0), "x-idempotent-replayed": "true"}
        return Response(replay.body, replay.status, headers, media_type="application/json")
    response: Response | None = None
    try:
        response = await generate()
        return response
    finally:
        if isinstance(response, Relayed):
            # Known only once its body has been read: kept then, as a result too large to replay
            # (a repeat gets 409, charged once), or abandoned if it broke off (a retry may go ahead).
            relayed = response

            async def keep(whole: bool) -> None:
                await _finish(redis, space, idempotency_key, relayed if whole else None, keep_s)

            relayed.then(keep)
        else:
            await _finish(redis, space, idempotency_key, response, keep_s)


async def _finish(
    redis: Redis, space: KeySpace, idempotency_key: str, response: Response | None, keep_s: int
) -> None:
    try:
        if response is not None and response.status_code == 200:
            headers = {k: v for k, v in response.headers.items() if k.startswith("x-gateway-")}
            await idempotency.complete(
                redis,
                space=space,
                idempotency_key=idempotency_key,
                status=200,
                headers=headers,
                body=None if isinstance(response, Relayed) else bytes(response.body),
                ttl_s=keep_s,
            )
        else:
            await idempotency.abandon(redis, space, idempotency_key)
    except Exception as exc:  # the images are delivered: never turn that into an error
        note_store_failure(exc)
