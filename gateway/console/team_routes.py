"""The console's Teams page and each team's page: ``/console/api/teams`` (every team's budget now)
and ``/console/api/teams/{team}/report`` (its keys, models and users for a range, each as CSV).

Read-only, behind the session like every console call; setting a budget is ``PUT
/console/api/teams/{team}`` (routes.py), which the admin API's team route mirrors.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.admin.roles import Principal
from gateway.admin.teams import TeamStore
from gateway.console import data, teams_page
from gateway.console.routes import _api, _session, csv_download, days_asked
from gateway.core.errors import bad_request, not_found
from gateway.routes.admin import guard_redis
from gateway.routes.teams import team_name
from gateway.state import state_of

router = APIRouter(prefix="/console", include_in_schema=False)


async def _team(request: Request, team: str, principal: Principal) -> str:
    """The team asked for; 404 if it does not exist or this caller may not see it (a team-admin's
    console holds its own teams only, as if no other existed)."""
    name = team_name(team)
    if not principal.sees(name) or not await guard_redis(TeamStore(state_of(request).redis).exists(name)):
        raise not_found(f"No team '{name}'.")
    return name


@router.get("/api/teams")
async def teams(request: Request) -> Response:
    only = (await _session(request)).principal.team_filter
    return _api(await guard_redis(data.teams_page(state_of(request).redis, only)))


@router.get("/api/teams/{team}/report")
async def team_report(
    team: str, request: Request, start: str | None = None, end: str | None = None, month: str | None = None
) -> Response:
    principal = (await _session(request)).principal
    days = days_asked(start, end, month)
    name = await _team(request, team, principal)
    return _api(await guard_redis(teams_page.team_page(state_of(request).redis, name, days)))


@router.get("/api/teams/{team}/{table}.csv")
async def team_table_csv(
    team: str,
    table: str,
    request: Request,
    start: str | None = None,
    end: str | None = None,
    month: str | None = None,
) -> Response:
    principal = (await _session(request)).principal
    if table not in teams_page.TABLES:
        raise bad_request(f"A team's tables are {', '.join(teams_page.TABLES)}; not {table!r}.", "table")
    days = days_asked(start, end, month)
    name = await _team(request, team, principal)
    text = await guard_redis(teams_page.table_csv(state_of(request).redis, name, days, table))
    return csv_download(text, f"{name}-{table}-{days.start}-{days.end}.csv")
