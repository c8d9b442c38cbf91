"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.alerts import pending
from gateway.core import metrics
from gateway.money import budget_gauge
from gateway.routes.responses import json_response
from gateway.state import state_of
from gateway.store import client as redis_client

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Readiness: Redis answers and the upstream is configured")
async def readyz(request: Request) -> Response:
    """Ready or not, and each upstream channel's state (``ready``, ``resting`` with its reason and
    the seconds left, ``probation``: its rest over, one live call testing it). A channel at rest
    does not make the gateway unready: the others serve, and a call no channel can take is
    answered 503 at once."""
    state = state_of(request)
    checks = {
        "redis": await redis_client.ping(state.redis),
        "upstream_configured": state.settings.upstream_api_key is not None
        or state.settings.channels_file is not None,
        "accepting": not state.admission.draining,
        "layout": state.layout.ready,
    }
    ready = all(checks.values())
    channels = state.router.board.states(state.router.names)
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks, "channels": channels},
        200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    state = state_of(request)
    redis = state.redis
    state.router.export_state(state.prices.prices)
    await budget_gauge.GAUGE.refresh(redis)
    await pending.GAUGE.refresh(redis)  # with or without a webhook: alerts may pile up unsent
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
