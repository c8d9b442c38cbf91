"""Finance's admin API: spend reports and raw usage exports (``/admin/v1``).

The same numbers as ``gateway report spend`` and ``gateway usage export``; see gateway/ledger/exports.py
for where they come from. Exports are streamed: a busy month does not fit in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from gateway.core.errors import GatewayError
from gateway.ledger import reports
from gateway.ledger.exports import MEDIA_TYPES, UsageExport
from gateway.ledger.query import LedgerQueryError, parse_range
from gateway.ledger.reports import parse_group_by
from gateway.routes.access_control import current
from gateway.routes.admin import READ, guard_redis, require_admin
from gateway.routes.responses import json_response
from gateway.routes.teams import team_name
from gateway.state import state_of

# Every caller may read these; a team-admin's are of its own teams (``current(request).team_filter``).
router = APIRouter(prefix="/admin/v1", tags=["reports"], dependencies=[Depends(require_admin), *READ])

T = TypeVar("T")
START = Query(description="First UTC day, YYYY-MM-DD.", examples=["2026-11-01"])
END = Query(description="Last UTC day, YYYY-MM-DD, included (start=end is that one day).")


def _query(parse: Callable[..., T], *args: str) -> T:
    """Parse a query parameter; a malformed one is a 400 naming it."""
    try:
        return parse(*args)
    except LedgerQueryError as exc:
        raise GatewayError(
            400, str(exc), "invalid_request_error", "invalid_query", exc.param, False, reason="bad_request"
        ) from None


SPEND_200 = {
    "description": "The report: `data` rows per group and `totals` (JSON), or the same as CSV with a "
    "header row and a final TOTAL row. Money is USD to the micro-dollar, as decimal strings: spend (what "
    "teams were charged), cost (what the channels charged the company; the spend where a channel has no "
    "cost configured) and margin (spend - cost).",
    "content": {"application/json": {}, "text/csv": {}},
}
USAGE_200 = {
    "description": "Every usage record of the range in time order, streamed: one JSON object per "
    "line, or CSV with a header row.",
    "content": {"application/x-ndjson": {}, "text/csv": {}},
}


@router.get(
    "/reports/spend",
    summary="Calls, images, spend, cost and margin per team, key, model, day, user or channel",
    response_class=Response,
    responses={200: SPEND_200},
)
async def spend_report(
    request: Request,
    start: str = START,
    end: str = END,
    group_by: str = Query(
        default="team",
        description="Comma-separated subset of team, key, model, day, user, channel (key: key_id and "
        "key_name columns; user: the OpenAI `user` a call named, empty for none; channel: the upstream "
        "channel that answered); empty: totals only.",
    ),
    format: Literal["json", "csv"] = "json",
    team: str | None = Query(default=None, description="Only this team's calls."),
) -> Response:
    days = _query(parse_range, start, end)
    groups = _query(parse_group_by, group_by)
    teams = _teams(request, team)
    report = await guard_redis(reports.spend_report(state_of(request).redis, days, groups, teams))
    if format == "csv":
        name = f"spend-{days.start}-{days.end}.csv"
        return Response(report.to_csv(), media_type=MEDIA_TYPES["csv"], headers=_attachment(name))
    return json_response(report.as_json())


@router.get(
    "/usage",
    summary="Every usage record of a range of days, streamed in time order",
    response_class=StreamingResponse,
    responses={200: USAGE_200},
)
async def usage_export(
    request: Request,
    start: str = START,
    end: str = END,
    format: Literal["jsonl", "csv"] = "jsonl",
    team: str | None = Query(default=None, description="Only the records of this team's keys."),
) -> Response:
    days = _query(parse_range, start, end)
    # Opened before the answer starts, so a Redis outage is a 503 and not a cut-off stream.
    export = await guard_redis(UsageExport.open(state_of(request).redis, days, _teams(request, team)))
    name = f"usage-{days.start}-{days.end}.{format}"
    return StreamingResponse(
        export.chunks(format), media_type=MEDIA_TYPES[format], headers=_attachment(name)
    )


def _teams(request: Request, team: str | None) -> list[str] | None:
    """The teams a report or export reads (see Principal.scope); None: every team."""
    return current(request).scope(None if team is None else team_name(team))


def _attachment(filename: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{filename}"'}
