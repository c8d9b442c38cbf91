"""The admin API's teams: ``/admin/v1/teams``, a budget shared by all of a team's keys.

Guarded like every admin route (routes/admin.py ``require_admin``); setting a team needs admin or
finance, and a team-admin sees its own teams only, as if no other existed.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.admin.roles import Permission
from gateway.admin.teams import TeamSettings, TeamStore, check_team_name
from gateway.core.errors import GatewayError, not_found
from gateway.core.settings import Settings
from gateway.routes.access_control import allow, audited, current
from gateway.routes.admin import READ, guard_redis, require_admin
from gateway.routes.responses import json_response
from gateway.state import state_of

router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])
log = logging.getLogger("gateway")


def team_name(team: str) -> str:
    try:
        return check_team_name(team)
    except ValueError as exc:
        raise GatewayError(400, str(exc), "invalid_request_error", "invalid_team", "team", False) from None


async def _existing(request: Request, store: TeamStore, team: str) -> str:
    name = team_name(team)
    if not current(request).sees(name) or not await guard_redis(store.exists(name)):
        raise not_found(f"No team '{name}' (a team exists once it has settings or keys).")
    return name


@router.put(
    "/teams/{team}",
    summary="Set a team's budget, image cap or alert thresholds (null clears)",
    dependencies=[Depends(allow(Permission.TEAM_SETTINGS))],
)
async def set_team(team: str, settings: TeamSettings, request: Request) -> Response:
    name = team_name(team)
    state = state_of(request)
    record = await guard_redis(TeamStore(state.redis).set(name, settings))
    await audited(request, "team.set", team=name, fields=sorted(settings.model_fields_set))
    return json_response({**record, **no_webhook_warning(state.settings, settings.alert_thresholds)})


def no_webhook_warning(settings: Settings, thresholds: list[Any] | None) -> dict[str, str]:
    """``{"warning": ...}`` when thresholds were set on a gateway that sends no alert."""
    if not thresholds or settings.alert_webhook_url is not None:
        return {}
    text = (
        "GATEWAY_ALERT_WEBHOOK_URL is not set: these thresholds' alerts are not sent, they wait in "
        "Redis (gateway alerts list, gateway_alerts_pending)."
    )
    log.warning("alert thresholds set without a webhook: %s", text)
    return {"warning": text}


@router.get("/teams", summary="List teams (every team with settings or keys)", dependencies=READ)
async def list_teams(request: Request) -> Response:
    teams = await guard_redis(TeamStore(state_of(request).redis).list())
    return json_response({"object": "list", "data": [t for t in teams if current(request).sees(t["team"])]})


@router.get("/teams/{team}", summary="Show a team's settings", dependencies=READ)
async def show_team(team: str, request: Request) -> Response:
    store = TeamStore(state_of(request).redis)
    return json_response(await guard_redis(store.get(await _existing(request, store, team))))


@router.get("/teams/{team}/usage", summary="A team's budget, spend and reservations now", dependencies=READ)
async def team_usage(team: str, request: Request) -> Response:
    store = TeamStore(state_of(request).redis)
    return json_response(await guard_redis(store.usage(await _existing(request, store, team))))
