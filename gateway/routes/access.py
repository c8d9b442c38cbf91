"""``/admin/v1/access``: named admin credentials with a role (admin/access.py), and the audit trail.

Only an ``admin`` (a named one, or the root ``GATEWAY_ADMIN_TOKEN``) manages access; admin and
finance read the audit trail. A credential's token is in the answer that grants it, and never again.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from gateway.admin import audit
from gateway.admin.access import CredentialSpec, CredentialStore, NameTaken
from gateway.admin.roles import Permission
from gateway.core.errors import GatewayError, bad_request, not_found
from gateway.routes.access_control import allow, audited, current
from gateway.routes.admin import guard_redis, require_admin
from gateway.routes.responses import json_response
from gateway.state import state_of

router = APIRouter(prefix="/admin/v1", tags=["access"], dependencies=[Depends(require_admin)])
ACCESS = [Depends(allow(Permission.ACCESS))]
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "A credential that is not revoked has this name."}
}


@router.post(
    "/access",
    responses=CONFLICT,
    status_code=201,
    summary="Grant a named credential (its token is shown once)",
    dependencies=ACCESS,
)
async def grant(spec: CredentialSpec, request: Request) -> Response:
    store = CredentialStore(state_of(request).redis)
    try:
        token, record = await guard_redis(store.grant(spec, created_by=current(request).actor))
    except NameTaken:
        raise GatewayError(
            409,
            f"A credential named '{spec.name}' exists: revoke it first, or choose another name.",
            "invalid_request_error",
            "credential_exists",
            "name",
            retry=False,
        ) from None
    await audited(
        request,
        "access.grant",
        name=spec.name,
        role=spec.role,
        teams=spec.teams,
        expires_at=record["expires_at"],
    )
    return json_response({**record, "token": token}, status_code=201)


@router.get("/access", summary="List the named credentials (never their tokens)", dependencies=ACCESS)
async def list_credentials(request: Request) -> Response:
    records = await guard_redis(CredentialStore(state_of(request).redis).list())
    return json_response({"object": "list", "data": records})


@router.delete(
    "/access/{name}", summary="Revoke a credential, at once, with its console sessions", dependencies=ACCESS
)
async def revoke(name: str, request: Request) -> Response:
    record = await guard_redis(CredentialStore(state_of(request).redis).revoke(name))
    if record is None:
        raise not_found(f"No credential named '{name}' in force.")
    await audited(request, "access.revoke", name=name, role=record["role"])
    return json_response(record)


def _moment(text: str | None, param: str, end_of_day: bool = False) -> int | None:
    try:
        return audit.parse_moment(text, end_of_day)
    except ValueError as exc:
        raise bad_request(f"'{param}' {exc}", param) from None


@router.get(
    "/audit",
    summary="The audit trail, newest first: every change, by whom, through what",
    dependencies=[Depends(allow(Permission.AUDIT))],
)
async def audit_trail(
    request: Request,
    since: str | None = Query(default=None, description="Oldest: a UTC day or an ISO 8601 time with offset."),
    until: str | None = Query(default=None, description="Newest: a UTC day (included) or a time."),
    limit: int = Query(default=100, ge=1, le=audit.MAX_LIST),
    before: str | None = Query(default=None, description="The next page: entries older than this id."),
) -> Response:
    if before is not None and not _STREAM_ID.fullmatch(before):
        raise bad_request(
            "'before' must be an entry id from a previous page, e.g. 1764547200000-0.", "before"
        )
    since_ms, until_ms = _moment(since, "since"), _moment(until, "until", end_of_day=True)
    found = await guard_redis(audit.entries(state_of(request).redis, since_ms, until_ms, limit, before))
    page = {"object": "list", "data": found, "next_before": found[-1]["id"] if len(found) == limit else None}
    return json_response(page)
