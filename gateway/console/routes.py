"""The console at ``/console``: static pages from the package, and the JSON calls they make.

Pages are plain files (HTML, one stylesheet, one script per page) shipped inside the package and
served from here: no build step, no CDN, nothing fetched from elsewhere; a Content-Security-Policy
of ``'self'`` makes the browser enforce that. The pages call ``/console/api/*`` with the session
cookie (gateway/console/session.py); those calls reuse what the admin API uses (the key store,
the team store, the ledger's spend report), validate with the admin API's models, and audit what
changes, like the admin API. Every call that changes something needs the session's CSRF token and
the gateway's own origin (session.check_csrf). Every call checks the session's role as the admin
API does (``_session(request, permission)``), and a team-admin's pages show its teams only.
Single sign-on (OpenID Connect) is console/sso.py.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError

from gateway.admin import auth as admin_auth
from gateway.admin.keys import KeyCreate, KeyStore, RotateRequest, shown_key_id
from gateway.admin.roles import Permission
from gateway.admin.teams import TeamSettings, TeamStore
from gateway.console import data, session
from gateway.core.errors import bad_request, not_found
from gateway.ledger.exports import MEDIA_TYPES
from gateway.ledger.query import DateRange, LedgerQueryError, parse_range
from gateway.routes.access_control import audited, check_token, enabled_state
from gateway.routes.admin import guard_redis, visible_key
from gateway.routes.responses import json_response
from gateway.routes.teams import no_webhook_warning, team_name
from gateway.state import GatewayState, state_of

STATIC = resources.files("gateway.console").joinpath("static")
MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

router = APIRouter(prefix="/console", include_in_schema=False)
Model = TypeVar("Model", bound=BaseModel)


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _file(name: str) -> Response:
    suffix = name[name.rfind(".") :]
    entry = STATIC.joinpath(name)
    if suffix not in MEDIA or "/" in name or name.startswith(".") or not entry.is_file():
        raise not_found("No such console file.")
    return _secured(Response(entry.read_bytes(), media_type=MEDIA[suffix]))


def _admin_state(request: Request) -> GatewayState:
    return enabled_state(request, "The console")


async def _session(
    request: Request, mutating: bool = False, permission: Permission = Permission.READ
) -> session.Session:
    """The caller's session (401 without one, or once its credential no longer holds); for a
    mutating call, its CSRF token too (403); and a role that may do ``permission`` (403)."""
    state = _admin_state(request)
    found = await session.load(state.redis, state.settings, request)
    if found is None:
        raise session.no_session()
    if mutating:
        session.check_csrf(request, found)
    request.state.principal = found.principal  # what audited() names as the actor
    found.principal.require(permission)
    return found


def _validated(model: type[Model], body: Any) -> Model:
    """``body`` as ``model``, else the admin API's 400: the first problem, ``param`` naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise bad_request(str(first["msg"]), ".".join(str(p) for p in first["loc"]) or None) from None


def _api(payload: Any, status_code: int = 200) -> Response:
    return _secured(json_response(payload, status_code=status_code))


# -- pages -----------------------------------------------------------------------------------------


@router.get("")
async def console_root() -> Response:
    return RedirectResponse("/console/", status_code=303)


@router.get("/")
async def console_page(request: Request) -> Response:
    """The console itself; without a session, the sign-in page instead."""
    state = _admin_state(request)
    if await session.load(state.redis, state.settings, request) is None:
        return _secured(RedirectResponse("/console/login", status_code=303))
    return _file("index.html")


@router.get("/login")
async def login_page() -> Response:
    return _file("login.html")


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    return _file(name)


# -- session ---------------------------------------------------------------------------------------


class SignIn(BaseModel):
    token: str = Field(max_length=4096)


async def _json_body(request: Request) -> Any:
    """A JSON body: a cross-site form cannot send one without the browser asking first (CORS)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise bad_request("Send JSON (Content-Type: application/json).")
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_request("The body is not valid JSON.") from None


@router.post("/api/session")
async def sign_in(request: Request) -> Response:
    """Exchange an admin token (the root one or a named credential's) for a session cookie; wrong
    tokens count towards the guessing block like the admin API's."""
    state = _admin_state(request)
    limiter = admin_auth.limiter_of(request)
    await limiter.check(admin_auth.client_address(request))
    if not session.same_origin(request):
        raise session.no_session()
    try:
        body = SignIn.model_validate(await _json_body(request))
    except ValidationError:
        raise bad_request('Send {"token": "..."}.', "token") from None
    token = body.token.strip()
    principal = await check_token(request, token, "console")
    proof = (lambda session_id: session.root_proof(session_id, token)) if principal.kind == "root" else ""
    session_id, created, ttl = await session.create(
        state.redis,
        state.settings.console_session_ttl_s,
        admin_auth.client_address(request),
        principal,
        principal.actor,
        proof,
        principal.expires_at_ms,
    )
    request.state.principal = principal
    await audited(request, "console.sign_in", method="token")
    response = _api(created.as_json())
    session.set_cookie(response, request, session_id, ttl)
    return response


@router.get("/api/session")
async def show_session(request: Request) -> Response:
    return _api((await _session(request)).as_json())


@router.delete("/api/session")
async def sign_out(request: Request) -> Response:
    await _session(request, mutating=True)
    await session.end(state_of(request).redis, request)
    await audited(request, "console.sign_out")
    response = _api({"signed_out": True})
    session.clear_cookie(response, request)
    return response


# -- data ------------------------------------------------------------------------------------------


def days_asked(start: str | None, end: str | None, month: str | None) -> DateRange:
    """The range a page asks for: ``start`` and ``end`` (the From and To of the page), else a
    ``month``, else the current UTC month; a malformed one is the admin API's 400."""
    try:
        if start is not None or end is not None:
            return parse_range(start, end)
        return data.month_range(month)
    except LedgerQueryError as exc:
        raise bad_request(str(exc), exc.param) from None
    except data.MonthError as exc:
        raise bad_request(str(exc), "month") from None


@router.get("/api/overview")
async def overview(
    request: Request, start: str | None = None, end: str | None = None, month: str | None = None
) -> Response:
    only = (await _session(request)).principal.team_filter
    days = days_asked(start, end, month)
    return _api(await guard_redis(data.overview(state_of(request).redis, days, only)))


@router.get("/api/spend.csv")
async def spend_csv(
    request: Request,
    start: str | None = None,
    end: str | None = None,
    month: str | None = None,
    by: Literal["team", "channel"] = "team",
) -> Response:
    only = (await _session(request)).principal.team_filter
    days = days_asked(start, end, month)
    text = await guard_redis(data.spend_csv(state_of(request).redis, days, only, by))
    name = "spend" if by == "team" else f"spend-by-{by}"
    return csv_download(text, f"{name}-{days.start}-{days.end}.csv")


def csv_download(text: str, filename: str) -> Response:
    headers = {"content-disposition": f'attachment; filename="{filename}"'}
    return _secured(Response(text, media_type=MEDIA_TYPES["csv"], headers=headers))


@router.get("/api/keys")
async def keys(
    request: Request,
    team: str | None = None,
    q: str | None = Query(default=None, max_length=200),
    page: int = Query(default=1, ge=1, le=1_000_000),
    per_page: int = Query(default=data.KEYS_PER_PAGE, ge=1, le=200),
) -> Response:
    principal = (await _session(request)).principal
    teams = principal.scope(team or None)
    listing = data.keys_page(state_of(request).redis, teams, q, page, per_page, principal.team_filter)
    return _api(await guard_redis(listing))


@router.post("/api/keys")
async def create_key(request: Request) -> Response:
    found = await _session(request, mutating=True, permission=Permission.KEYS)
    spec = _validated(KeyCreate, await _json_body(request))
    found.principal.require_team(Permission.KEYS, spec.team)
    token, record = await guard_redis(KeyStore(state_of(request).redis).create(spec))
    await audited(request, "key.create", key_id=record["key_id"], team=record["team"])
    return _api({**record, "key": token}, status_code=201)


@router.post("/api/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request) -> Response:
    await _session(request, mutating=True, permission=Permission.KEYS)
    await visible_key(request, key_id)
    record = await guard_redis(KeyStore(state_of(request).redis).revoke(key_id))
    if record is None:
        raise not_found(f"No key with {shown_key_id(key_id)}.")
    await audited(request, "key.revoke", key_id=key_id)
    return _api(record)


@router.post("/api/keys/{key_id}/rotate")
async def rotate_key(key_id: str, request: Request) -> Response:
    await _session(request, mutating=True, permission=Permission.KEYS)
    await visible_key(request, key_id)
    grace = _validated(RotateRequest, await _json_body(request)).grace_seconds
    rotated = await guard_redis(KeyStore(state_of(request).redis).rotate(key_id, grace))
    if rotated is None:
        raise not_found(f"No key with {shown_key_id(key_id)}.")
    token, record = rotated
    await audited(request, "key.rotate", key_id=key_id, grace_seconds=grace)
    return _api({**record, "key": token, "previous_key_valid_for_s": grace})


@router.put("/api/teams/{team}")
async def set_team(team: str, request: Request) -> Response:
    """``PUT /admin/v1/teams/{team}`` for the console: the fields given change, ``null`` clears one."""
    await _session(request, mutating=True, permission=Permission.TEAM_SETTINGS)
    name = team_name(team)
    spec = _validated(TeamSettings, await _json_body(request))
    state = state_of(request)
    record = await guard_redis(TeamStore(state.redis).set(name, spec))
    await audited(request, "team.set", team=name, fields=sorted(spec.model_fields_set))
    return _api({**record, **no_webhook_warning(state.settings, spec.alert_thresholds)})
