"""Console sessions: a random id in an HttpOnly cookie, its SHA-256 in Redis with a TTL.

Why Redis and not a signed cookie: every worker and replica already shares Redis, so a session
made by one is seen by all with no new secret to distribute (a signed cookie needs a signing key
on every replica); and "Sign out" really ends the session everywhere, which a signed cookie cannot
do before it expires. Only the hash of the id is stored, so reading Redis gives no usable cookie.

A session lasts ``GATEWAY_CONSOLE_SESSION_TTL_S`` (8 hours) from sign-in, or until its credential
expires if that is sooner: the cookie's ``Max-Age`` and the Redis key's TTL are the same number.

A session carries the credential it was made with, and is checked against it on every request
(:func:`load`): a named credential revoked or expired, the root ``GATEWAY_ADMIN_TOKEN`` changed
(the session keeps an HMAC of the token keyed by the session id, which Redis never holds), or the
single sign-on provider it came from no longer configured, and the session is deleted there and
then. It also carries the role, which every console call honours.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from gateway.admin.access import CredentialStore
from gateway.admin.roles import Principal
from gateway.core.errors import GatewayError, redis_unavailable
from gateway.core.settings import Settings
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
    principal: Principal
    display: str  # who the console says is signed in: a person's name and email, a credential's name

    def as_json(self) -> dict[str, Any]:
        return {
            "csrf_token": self.csrf_token,
            "expires_at_ms": self.expires_at_ms,
            "display": self.display,
            **self.principal.as_json(),
        }


def root_proof(session_id: str, token: str) -> str:
    """What a root-token session keeps of the token: useless without the cookie's session id."""
    return hmac.new(session_id.encode(), token.encode(), hashlib.sha256).hexdigest()


def sso_proof(settings: Settings) -> str:
    """A single sign-on session is good while the same provider and client are configured."""
    return f"{settings.oidc_issuer} {settings.oidc_client_id}"


def no_session() -> GatewayError:
    return GatewayError(
        401,
        "Sign in to the console first.",
        "invalid_request_error",
        "console_session_required",
        retry=False,
        reason="invalid_key",
    )


async def create(
    redis: Any,
    ttl_s: int,
    client: str,
    principal: Principal,
    display: str,
    proof: str | Callable[[str], str] = "",
    expires_at_ms: int = 0,
) -> tuple[str, Session, int]:
    """A new session: the id for the cookie (never stored), the session, and its lifetime in
    seconds (``ttl_s``, or less when the credential expires sooner: ``expires_at_ms``). ``proof``
    is what :func:`load` checks the credential against (made from the session id, if a function)."""
    session_id = secrets.token_urlsafe(32)
    now_ms = int(time.time() * 1000)
    if expires_at_ms:
        ttl_s = max(1, min(ttl_s, (expires_at_ms - now_ms) // 1000))
    session = Session(secrets.token_urlsafe(32), now_ms + ttl_s * 1000, principal, display)
    value = {
        "csrf_token": session.csrf_token,
        "expires_at_ms": session.expires_at_ms,
        "client": client,
        "display": display,
        "actor": principal.actor,
        "role": principal.role,
        "teams": sorted(principal.teams),
        "kind": principal.kind,
        "credential_id": principal.credential_id,
        "proof": proof(session_id) if callable(proof) else proof,
    }
    try:
        await redis.set(_redis_key(session_id), orjson.dumps(value), ex=ttl_s)
    except REDIS_ERRORS:
        raise redis_unavailable() from None
    return session_id, session, ttl_s


async def _still_valid(redis: Any, settings: Settings, session_id: str, data: dict[str, Any]) -> bool:
    """Whether the credential that made the session still holds, checked on every request."""
    kind, proof = data.get("kind"), str(data.get("proof", ""))
    if kind == "root":
        token = settings.admin_token
        return token is not None and hmac.compare_digest(
            proof, root_proof(session_id, token.get_secret_value())
        )
    if kind == "credential":
        return await CredentialStore(redis).active(str(data.get("credential_id", ""))) is not None
    if kind == "sso":
        return settings.oidc_issuer is not None and hmac.compare_digest(proof, sso_proof(settings))
    return False  # a session of the release before roles: sign in again


async def load(redis: Any, settings: Settings, request: Request) -> Session | None:
    """The request's session if its credential still holds; a session whose credential was
    revoked, expired or replaced is deleted here, and the caller must sign in again."""
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 100:
        return None
    try:
        raw = await redis.get(_redis_key(session_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        if not await _still_valid(redis, settings, session_id, data):
            await redis.delete(_redis_key(session_id))
            return None
    except REDIS_ERRORS:
        raise redis_unavailable() from None
    principal = Principal(
        str(data["actor"]),
        data["role"],
        data["kind"],
        "console",
        frozenset(data.get("teams") or ()),
        str(data.get("credential_id", "")),
    )
    return Session(
        str(data["csrf_token"]), int(data["expires_at_ms"]), principal, str(data.get("display", ""))
    )


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
