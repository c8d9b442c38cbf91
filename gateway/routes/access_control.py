"""Who is calling the admin API, what their role allows, and the audit entry of what they changed.

:func:`authenticate` turns ``Authorization: Bearer ...`` into a :class:`~gateway.admin.roles.Principal`:
the root ``GATEWAY_ADMIN_TOKEN`` (compared in constant time) or a named credential
(admin/access.py, read from Redis on every request, so a revocation bites at once everywhere).
Every credential goes through the same guessing limiter (admin/auth.py): an address cooling off
is refused before anything is compared, and every token that does not authenticate (wrong,
unknown, revoked, expired) counts as a guess. With no root token configured, the admin API
answers 503 rather than being open.

Routes declare what they do with ``dependencies=[Depends(allow(Permission.X))]``; the console
puts its session's principal on the request the same way, so :func:`audited` names the actor
whichever door a change came through.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import HTTPConnection, Request

from gateway.admin import audit
from gateway.admin import auth as admin_auth
from gateway.admin.access import CredentialStore, principal_of
from gateway.admin.roles import Permission, Principal, root
from gateway.core.errors import GatewayError, redis_unavailable
from gateway.state import GatewayState
from gateway.store.client import REDIS_ERRORS


def admin_disabled(what: str) -> GatewayError:
    return GatewayError(
        503,
        f"{what} is disabled: set GATEWAY_ADMIN_TOKEN to enable it.",
        "server_error",
        "admin_disabled",
        retry=False,
    )


def unauthenticated(
    message: str = "A valid admin token is required.", code: str = "invalid_admin_token"
) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", code, retry=False, reason="invalid_key")


def enabled_state(request: HTTPConnection, what: str = "The admin API") -> GatewayState:
    state: GatewayState = request.app.state.gateway
    if state.settings.admin_token is None:
        raise admin_disabled(what)
    return state


async def check_token(request: HTTPConnection, presented: str, via: str) -> Principal:
    """The principal of ``presented`` (root token or named credential), else 401 counted as a guess.

    The caller has checked the limiter first.
    """
    state = enabled_state(request)
    expected = state.settings.admin_token.get_secret_value().encode()  # type: ignore[union-attr]
    if hmac.compare_digest(presented.encode(), expected):
        principal = root(via)
        await _note_root_use(request, principal)
        return principal
    try:
        outcome, record = await CredentialStore(state.redis).authenticate(presented)
    except REDIS_ERRORS:
        raise redis_unavailable() from None
    if outcome == "ok" and record is not None:
        return principal_of(record, via)
    await admin_auth.record_failure(request, via=via)
    if outcome == "expired" and record is not None:
        when = datetime.fromtimestamp(int(record["expires_at_ms"]) / 1000, tz=UTC).isoformat()
        raise unauthenticated(f"This admin credential expired at {when}.", "admin_credential_expired")
    raise unauthenticated("Wrong admin token." if via == "console" else "A valid admin token is required.")


async def _note_root_use(request: HTTPConnection, principal: Principal) -> None:
    """The break-glass token's use is on record: once per address and minute (its changes, each)."""
    state: GatewayState = request.app.state.gateway
    address = admin_auth.client_address(request)
    try:
        first = await audit.first_root_use(state.redis, address)
    except REDIS_ERRORS:
        raise redis_unavailable() from None
    if first:
        target = {"method": request.scope.get("method", ""), "path": request.url.path}
        entry = audit.AuditEntry("admin-token.used", principal.actor, principal.via, target, address)
        await audit.record(state.redis, entry, state.settings.audit_retention_days)


async def authenticate(request: Request) -> Principal:
    """The admin API's caller, authenticated once per request and kept on ``request.state``."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is not None:
        return found
    enabled_state(request)
    # Before the token is even compared: an address cooling off learns nothing from its guesses.
    await admin_auth.limiter_of(request).check(admin_auth.client_address(request))
    header = request.headers.get("authorization")
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        if header is not None:  # a credential was presented and was malformed: a guess (no header: none)
            await admin_auth.record_failure(request, via="api")
        raise unauthenticated()
    principal = await check_token(request, presented.strip(), "api")
    request.state.principal = principal
    return principal


def current(request: HTTPConnection) -> Principal:
    """The principal :func:`authenticate` or the console's session put on this request."""
    principal: Principal = request.state.principal
    return principal


def allow(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A route dependency: the caller, if its role may do ``permission``; else 403 naming the role."""

    async def check(request: Request) -> Principal:
        principal = await authenticate(request)
        principal.require(permission)
        return principal

    return check


async def audited(request: HTTPConnection, action: str, **target: Any) -> None:
    """The audit entry of a change just made by this request's principal (log line and trail)."""
    principal = current(request)
    state: GatewayState = request.app.state.gateway
    entry = audit.AuditEntry(
        action, principal.actor, principal.via, target, admin_auth.client_address(request)
    )
    await audit.record(state.redis, entry, state.settings.audit_retention_days)
