"""Console single sign-on: ``/console/oidc/login`` and ``/console/oidc/callback`` (console/oidc.py
speaks to the provider).

**Starting.** ``login`` makes a flow (``state``, ``nonce``, PKCE verifier), keeps it in Redis for
:data:`FLOW_TTL_S` under the SHA-256 of its state, sets a cookie ``gw_oidc`` with a random value
bound to the flow (``SameSite=Lax``, so that it comes back on the provider's redirect, which a
``Strict`` cookie would not), and sends the browser to the provider.

**Coming back.** ``callback`` takes the flow out of Redis in one GETDEL (a state is good once),
checks the browser holds the flow's cookie (someone else's callback link signs nobody in),
exchanges the code at the provider (a code is good once there) and verifies the ID token. The
person's groups (``GATEWAY_OIDC_ROLES_CLAIM``) give the role: ``{prefix}admin``,
``{prefix}finance``, ``{prefix}team-admin:<team>``; in none of them, a page says there is no
access. Groups are read at every sign-in, so a change at the provider counts from the next one.
The session cookie is ``SameSite=Strict``: a cookie set in the answer to a cross-site redirect is
not sent on the next cross-site-initiated request, so the callback answers a small page that
moves on to ``/console/`` itself rather than a redirect.

Every failed callback counts towards the address's guessing block, like a wrong admin token, and
a blocked address cannot start or finish a sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.admin import auth as admin_auth
from gateway.admin.audit import AuditEntry, record
from gateway.admin.roles import Principal, role_from_groups
from gateway.console import session
from gateway.console.oidc import Flow, OidcClient, OidcError, groups, person
from gateway.console.routes import SECURITY_HEADERS
from gateway.core.settings import Settings
from gateway.routes.access_control import audited, enabled_state
from gateway.routes.responses import json_response
from gateway.state import GatewayState
from gateway.store.client import REDIS_ERRORS
from gateway.store.keyspace import OIDC_FLOW

router = APIRouter(prefix="/console", include_in_schema=False)
FLOW_COOKIE = "gw_oidc"
FLOW_PATH = "/console/oidc"
FLOW_TTL_S = 600


def _client(request: Request) -> OidcClient | None:
    """The process's provider client (its caches), made on first use; None without SSO settings."""
    settings: Settings = _console_state(request).settings
    if settings.oidc_issuer is None or settings.oidc_client_id is None or settings.oidc_client_secret is None:
        return None
    client: OidcClient | None = getattr(request.app.state, "oidc_client", None)
    if client is None or client.issuer != settings.oidc_issuer:
        client = OidcClient(
            settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret.get_secret_value()
        )
        request.app.state.oidc_client = client
    return client


def _console_state(request: Request) -> GatewayState:
    return enabled_state(request, "The console")


def _page(title: str, message: str, status: int, extra_head: str = "", link: str = "") -> Response:
    """A small page of the console's style; every text in it is escaped."""
    body = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{html.escape(title)} · Image gateway console</title>
  <link rel="icon" href="/console/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/console/static/console.css">{extra_head}
</head>
<body class="signin">
  <main class="signin-box" id="sso-page">
    <h1>{html.escape(title)}</h1>
    <p>{html.escape(message)}</p>
    <p>{link or '<a href="/console/login">Back to sign-in</a>'}</p>
  </main>
</body>
</html>
"""
    response = HTMLResponse(body, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _redirect_uri(request: Request) -> str:
    """The console's own origin (uvicorn applies a trusted proxy's headers) and the callback path."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}{FLOW_PATH}/callback"


def _flow_key(state: str) -> str:
    return f"{OIDC_FLOW}:{hashlib.sha256(state.encode()).hexdigest()}"


@router.get("/api/signin-options")
async def signin_options(request: Request) -> Response:
    """What the sign-in page offers besides the token form."""
    response = json_response({"sso": _client(request) is not None})
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/oidc/login")
async def sso_login(request: Request) -> Response:
    client = _client(request)
    if client is None:
        return _page("Single sign-on is off", "This gateway has no identity provider configured.", 404)
    state = _console_state(request)
    await admin_auth.limiter_of(request).check(admin_auth.client_address(request))
    flow, binding = Flow.new(), secrets.token_urlsafe(32)
    redirect_uri = _redirect_uri(request)
    try:
        target = await client.authorization_url(flow, redirect_uri)
    except OidcError as exc:
        return _page("Sign-in is unavailable", str(exc), 502)
    kept = {
        "nonce": flow.nonce,
        "verifier": flow.verifier,
        "redirect_uri": redirect_uri,
        "binding": hashlib.sha256(binding.encode()).hexdigest(),
    }
    try:
        await state.redis.set(_flow_key(flow.state), orjson.dumps(kept), ex=FLOW_TTL_S)
    except REDIS_ERRORS:
        return _page("Sign-in is unavailable", "The gateway's store does not answer; try again shortly.", 503)
    response = RedirectResponse(target, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    response.set_cookie(
        FLOW_COOKIE,
        binding,
        max_age=FLOW_TTL_S,
        path=FLOW_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def _take_flow(request: Request, state_param: str) -> dict[str, Any] | None:
    """The flow of ``state_param``, taken out of Redis (good once), if this browser started it."""
    if not state_param or len(state_param) > 200:
        return None
    try:
        raw = await _console_state(request).redis.getdel(_flow_key(state_param))
    except REDIS_ERRORS:
        raise OidcError("The gateway's store does not answer; try again shortly.") from None
    if raw is None:
        return None
    kept: dict[str, Any] = orjson.loads(raw)
    binding = request.cookies.get(FLOW_COOKIE, "")
    presented = hashlib.sha256(binding.encode()).hexdigest()
    return kept if hmac.compare_digest(presented, str(kept["binding"])) else None


@router.get("/oidc/callback")
async def sso_callback(request: Request) -> Response:
    client = _client(request)
    if client is None:
        return _page("Single sign-on is off", "This gateway has no identity provider configured.", 404)
    state = _console_state(request)
    await admin_auth.limiter_of(request).check(admin_auth.client_address(request))
    params = request.query_params
    kept: dict[str, Any] | None = None
    try:
        kept = await _take_flow(request, params.get("state", ""))
        if kept is None:
            raise OidcError(
                "This sign-in is not valid here: it expired, was used already, or was not started "
                "in this browser."
            )
        if params.get("iss") not in (None, client.issuer):  # RFC 9207: the answer of another provider
            raise OidcError("The sign-in answer comes from another identity provider.")
        if params.get("error"):
            raise OidcError(f"The identity provider refused: {params['error'][:100]}.")
        flow = Flow(params["state"], str(kept["nonce"]), str(kept["verifier"]))
        id_token = await client.exchange(params.get("code", ""), flow, str(kept["redirect_uri"]))
        claims = await client.verify(id_token, flow.nonce)
    except OidcError as exc:
        await admin_auth.record_failure(request, via="console")
        failed = _page("Sign-in failed", str(exc), 400)
        # A bogus callback (a wrong state) must not spoil this browser's sign-in in progress.
        return _clear_flow(failed) if kept is not None else failed
    actor, display = person(claims)
    granted = role_from_groups(
        groups(claims, state.settings.oidc_roles_claim), state.settings.oidc_group_prefix
    )
    if granted is None:
        held = groups(claims, state.settings.oidc_roles_claim)
        address = admin_auth.client_address(request)
        refused = AuditEntry("console.sso_no_access", actor, "console", {"groups": held}, address)
        await record(state.redis, refused, state.settings.audit_retention_days)
        prefix = state.settings.oidc_group_prefix
        message = (
            f"You are signed in at your identity provider as {display}, but you have no access to this "
            f"gateway's console: you are in none of the groups {prefix}admin, {prefix}finance or "
            f"{prefix}team-admin:<team>. Ask your administrator for access."
        )
        return _clear_flow(_page("No access", message, 403))
    role, teams = granted
    principal = Principal(actor, role, "sso", "console", teams)
    session_id, _, ttl = await session.create(
        state.redis,
        state.settings.console_session_ttl_s,
        admin_auth.client_address(request),
        principal,
        display,
        session.sso_proof(state.settings),
    )
    request.state.principal = principal
    await audited(request, "console.sign_in", method="sso", role=role, teams=sorted(teams) or None)
    page = _page(
        "Signed in",
        f"Signed in as {display}.",
        200,
        extra_head='\n  <meta http-equiv="refresh" content="0; url=/console/">',
        link='<a href="/console/">Continue to the console</a>',
    )
    session.set_cookie(page, request, session_id, ttl)
    return _clear_flow(page)


def _clear_flow(response: Response) -> Response:
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, httponly=True, samesite="lax")
    return response
