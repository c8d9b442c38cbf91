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
from typing import Any

import orjson

from gateway.budget import LuaScript
from gateway.errors import GatewayError
from gateway.redis_keys import KeySpace

MAX_REPLAY_BYTES = 4 * 1024 * 1024
MAX_KEY_LENGTH = 255

BEGIN = LuaScript(
    """
-- KEYS: 1 the idempotency record. ARGV: 1 body hash, 2 lifetime of a pending record (ms),
-- 3 the request id that claims it. A claim resent by the Redis client after a timeout finds its
-- own pending record and goes ahead, instead of answering its own request "in progress".
local found = redis.call('HMGET', KEYS[1], 'body_sha', 'state', 'status', 'headers', 'body', 'owner')
if not found[1] then
  redis.call('HSET', KEYS[1], 'body_sha', ARGV[1], 'state', 'pending', 'owner', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if found[1] ~= ARGV[1] then return {'conflict'} end
if found[2] == 'pending' then
  if ARGV[3] ~= '' and found[6] == ARGV[3] then return {'new'} end
  return {'pending'}
end
return {found[2], found[3] or '', found[4] or '', found[5] or ''}
"""
)

# One script rather than a MULTI/EXEC pipeline: the async cluster client of the redis-py 5.x
# that pyproject allows refuses transactions; a script runs the same everywhere. body_sha stays.
COMPLETE = LuaScript(
    """
-- KEYS: 1 the idempotency record. ARGV: 1 lifetime (s), 2.. field, value pairs.
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
)


@dataclass(frozen=True)
class Replay:
    status: int
    headers: dict[str, str]
    body: bytes


def _record_key(key_id: str, idempotency_key: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return KeySpace(key_id).idempotency(digest)


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
    redis: Any, key_id: str, idempotency_key: str, body: bytes, pending_ms: int, request_id: str = ""
) -> Replay | None:
    """None: this request goes ahead (and owns the key). A Replay: answer with it. Else a 409."""
    body_sha = hashlib.sha256(body).hexdigest()
    found = await BEGIN(redis, [_record_key(key_id, idempotency_key)], [body_sha, pending_ms, request_id])
    state = found[0].decode() if isinstance(found[0], bytes) else found[0]
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
    headers = orjson.loads(found[2]) if found[2] else {}
    return Replay(int(found[1]), headers, found[3] if isinstance(found[3], bytes) else found[3].encode())


async def complete(
    redis: Any,
    key_id: str,
    idempotency_key: str,
    status: int,
    headers: dict[str, str],
    body: bytes,
    ttl_s: int,
) -> None:
    """Keep a successful result for replays."""
    record = _record_key(key_id, idempotency_key)
    if len(body) > MAX_REPLAY_BYTES:
        fields: dict[str, Any] = {"state": "too_large", "status": status}
    else:
        fields = {"state": "done", "status": status, "headers": orjson.dumps(headers), "body": body}
    args: list[Any] = [ttl_s]
    for name, value in fields.items():
        args += [name, value]
    await COMPLETE(redis, [record], args)


async def abandon(redis: Any, key_id: str, idempotency_key: str) -> None:
    """The request failed without a charge: let a retry with the same key go ahead."""
    await redis.delete(_record_key(key_id, idempotency_key))
