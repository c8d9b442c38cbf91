"""Console sessions: a random id in an HttpOnly cookie, its SHA-256 in Redis with a TTL.

Why Redis and not a signed cookie: every worker and replica already shares Redis, so a session
made by one is seen by all with no new secret to distribute (a signed cookie needs a signing key
on every replica); and "Sign out" really ends the session everywhere, which a signed cookie cannot
do before it expires. Only the hash of the id is stored, so reading Redis gives no usable cookie.

A session lasts ``GATEWAY_CONSOLE_SESSION_TTL_S`` (8 hours) from sign-in, whatever happens in
between: the cookie's ``Max-Age`` and the Redis key's TTL are the same number.

Cross-site requests: the cookie is ``SameSite=Strict``, and every mutating console call must also
carry the session's CSRF token in ``X-CSRF-Token`` (the page reads it from ``GET
/console/api/session``, which another site cannot read) and, when the browser sends ``Origin``,
come from the gateway's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from gateway.core.errors import GatewayError, redis_unavailable
from gateway.store.client import REDIS_ERRORS
from gateway.store.keyspace import PREFIX

COOKIE = "gw_console"
COOKIE_PATH = "/console"
CSRF_HEADER = "x-csrf-token"


def _redis_key(session_id: str) -> str:
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return f"{PREFIX}:{{console-session}}:{digest}"


@dataclass(frozen=True)
class Session:
    csrf_token: str
    expires_at_ms: int

    def as_json(self) -> dict[str, Any]:
        return {"csrf_token": self.csrf_token, "expires_at_ms": self.expires_at_ms}


def no_session() -> GatewayError:
    return GatewayError(
        401,
        "Sign in to the console first.",
        "invalid_request_error",
        "console_session_required",
        retry=False,
        reason="invalid_key",
    )


async def create(redis: Any, ttl_s: int, client: str) -> tuple[str, Session]:
    """A new session: returns the id for the cookie (never stored) and the session."""
    session_id = secrets.token_urlsafe(32)
    session = Session(secrets.token_urlsafe(32), int(time.time() * 1000) + ttl_s * 1000)
    value = orjson.dumps({**session.as_json(), "client": client})
    try:
        await redis.set(_redis_key(session_id), value, ex=ttl_s)
    except REDIS_ERRORS:
        raise redis_unavailable() from None
    return session_id, session


async def load(redis: Any, request: Request) -> Session | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 100:
        return None
    try:
        raw = await redis.get(_redis_key(session_id))
    except REDIS_ERRORS:
        raise redis_unavailable() from None
    if raw is None:
        return None
    data = orjson.loads(raw)
    return Session(str(data["csrf_token"]), int(data["expires_at_ms"]))


async def end(redis: Any, request: Request) -> None:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        try:
            await redis.delete(_redis_key(session_id))
        except REDIS_ERRORS:
            raise redis_unavailable() from None


def set_cookie(response: Response, request: Request, session_id: str, ttl_s: int) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=ttl_s,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",  # uvicorn sets it from a trusted proxy's X-Forwarded-Proto
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def same_origin(request: Request) -> bool:
    """True unless the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin == own


def check_csrf(request: Request, session: Session) -> None:
    """403 unless a mutating call carries the session's CSRF token and comes from our origin."""
    presented = request.headers.get(CSRF_HEADER, "")
    if not same_origin(request) or not hmac.compare_digest(presented.encode(), session.csrf_token.encode()):
        raise GatewayError(
            403,
            "Cross-site request refused: reload the console and try again.",
            "invalid_request_error",
            "csrf_failed",
            retry=False,
            reason="bad_request",
        )
