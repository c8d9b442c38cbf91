"""Step 1: who is calling. The bearer token's shape is checked here, before anything is read.

The hot path authenticates inside the reserve script (one round trip for both); :func:`known_key`
is for the paths that must name the caller before reserving: a refused body is answered only
once the key is known to be good, so a caller with a bad key learns nothing about its body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.exceptions import RedisError
from starlette.requests import Request

from gateway.admin.keys import KeyStore, key_status, parse_token
from gateway.call import refusals
from gateway.call.outage import store_unavailable
from gateway.core import errors


@dataclass(frozen=True)
class Token:
    key_id: str
    secret_hash: str  # sha256 of the whole presented key: what Redis keeps


def bearer_token(request: Request) -> Token:
    """The caller's well-formed team key, else a 401."""
    header = request.headers.get("authorization")
    if not header:
        raise errors.unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-gw-...'.",
            code="missing_api_key",
        )
    scheme, _, token = header.partition(" ")
    parsed = parse_token(token.strip()) if scheme.lower() == "bearer" else None
    if parsed is None:
        raise refusals.invalid_key(token.strip())
    return Token(*parsed)


async def known_key(keys: KeyStore, token: Token) -> dict[str, str]:
    """The key's record if it may be used, else the 401 that says why (503 if Redis is down)."""
    try:
        record = await keys.authenticate_parsed(token.key_id, token.secret_hash)
    except (RedisError, OSError) as exc:
        raise store_unavailable(exc) from None
    if record is None:
        raise refusals.invalid_key()
    status = key_status(record)
    if status == "revoked":
        raise refusals.revoked(int(record["revoked_at"]))
    if status == "expired":
        raise refusals.expired(int(record["expires_at"]))
    return record


def usable_models(record: Mapping[str, str], prices: Mapping[str, int]) -> dict[str, int]:
    """The models a key may use, with their prices: those served that its allow-list names (an
    empty allow-list: all of them)."""
    allowed = {m for m in record.get("models", "").split(",") if m}
    return {m: p for m, p in sorted(prices.items()) if not allowed or m in allowed}
