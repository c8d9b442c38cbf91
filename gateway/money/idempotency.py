"""``Idempotency-Key``: a repeated request returns the first result, without a second charge.

The OpenAI SDKs retry 5xx, 429 and timeouts; a caller who sends ``Idempotency-Key`` (through
``extra_headers``) gets the first successful result back for the same key and body for 24 h,
instead of a second upstream call that the upstream would bill. The same key with a different
body is a 409. Records live under the team key's hash tag, so one key's idempotency keys never
meet another's.

A result larger than ``MAX_REPLAY_BYTES`` (multi-MB base64 images) is not kept in Redis: a
repeat of it gets a 409 saying the first call succeeded and was charged once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from gateway.core.errors import GatewayError
from gateway.store import scripts
from gateway.store.keyspace import KeySpace
from gateway.store.protocol import Redis, RedisValue, text
from gateway.store.scripts import named

MAX_REPLAY_BYTES = 4 * 1024 * 1024
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Replay:
    status: int
    headers: dict[str, str]
    body: bytes


def _record_key(space: KeySpace, idempotency_key: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return space.idempotency(digest)


def check_key(idempotency_key: str) -> None:
    if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
        raise GatewayError(
            400,
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            "invalid_request_error",
            "invalid_idempotency_key",
            "Idempotency-Key",
            False,
            reason="bad_request",
        )


async def begin(
    redis: Redis, *, space: KeySpace, idempotency_key: str, body: bytes, pending_ms: int, request_id: str
) -> Replay | None:
    """None: this request goes ahead (and owns the key). A Replay: answer with it. Else a 409."""
    body_sha = hashlib.sha256(body).hexdigest()
    record = _record_key(space, idempotency_key)
    found = named(await scripts.IDEMPOTENCY_BEGIN(redis, [record], [body_sha, pending_ms, request_id]))
    state = text(found["state"])
    if state == "new":
        return None
    if state == "conflict":
        raise GatewayError(
            409,
            "This Idempotency-Key was already used with a different request body.",
            "invalid_request_error",
            "idempotency_key_reused",
            "Idempotency-Key",
            False,
            reason="bad_request",
        )
    if state == "pending":
        raise GatewayError(
            409,
            "A request with this Idempotency-Key is still in progress; retry shortly.",
            "invalid_request_error",
            "idempotency_key_in_progress",
            "Idempotency-Key",
            True,
            2,
            reason="bad_request",
        )
    if state == "too_large":
        raise GatewayError(
            409,
            "The first request with this Idempotency-Key succeeded and was charged once; its "
            "result is too large to replay. Send a new Idempotency-Key for a new generation.",
            "invalid_request_error",
            "idempotency_result_not_replayable",
            "Idempotency-Key",
            False,
            reason="bad_request",
        )
    headers = orjson.loads(found["headers"]) if found["headers"] else {}
    body_found = found["body"]
    return Replay(
        int(found["status"]), headers, body_found if isinstance(body_found, bytes) else body_found.encode()
    )


async def complete(
    redis: Redis,
    *,
    space: KeySpace,
    idempotency_key: str,
    status: int,
    headers: dict[str, str],
    body: bytes | None,
    ttl_s: int,
) -> None:
    """Keep a successful result for replays; ``None``: a streamed answer, never kept whole."""
    record = _record_key(space, idempotency_key)
    if body is None or len(body) > MAX_REPLAY_BYTES:
        fields: dict[str, RedisValue] = {"state": "too_large", "status": status}
    else:
        fields = {"state": "done", "status": status, "headers": orjson.dumps(headers), "body": body}
    args: list[RedisValue] = [ttl_s]
    for name, value in fields.items():
        args += [name, value]
    await scripts.IDEMPOTENCY_COMPLETE(redis, [record], args)


async def abandon(redis: Redis, space: KeySpace, idempotency_key: str) -> None:
    """The request failed without a charge: let a retry with the same key go ahead."""
    await redis.delete(_record_key(space, idempotency_key))
