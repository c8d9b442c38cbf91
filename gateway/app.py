"""The FastAPI app factory and its lifespan: Redis, the upstream client, prices, the spool.

uvicorn imports ``gateway.app:create_app`` in every worker (``factory=True``): workers are fresh
processes and inherit nothing from ``gateway serve`` but the environment.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__, console
from gateway.admin.keys import KeyStore
from gateway.admin.layout_upgrade import LayoutKeeper
from gateway.alerts import pending
from gateway.alerts import sender as alert_sender
from gateway.call.admission import Admission
from gateway.call.observe import UPSTREAM_ERROR_REASONS, Observer
from gateway.call.reserve import ReserveCancels
from gateway.call.settle import Settler
from gateway.core import metrics
from gateway.core.errors import GatewayError, internal_error
from gateway.core.logs import AccessLog, configure_logging
from gateway.core.settings import Settings, load_settings
from gateway.ledger.orphan_sweep import OrphanSweeper
from gateway.money import pricing
from gateway.money.spool import Spool
from gateway.routes import access, admin, health, images, models, reports, teams
from gateway.routes.openapi_docs import document_shared_errors, serve_docs_offline
from gateway.state import GatewayState, instance_name
from gateway.store import client as redis_client
from gateway.store.directory import KeyDirectory
from gateway.store.protocol import Redis
from gateway.store.registry import registered_teams
from gateway.upstream.routing import build_router

log = logging.getLogger("gateway")
# How long start-up waits for the layout check before serving anyway (it goes on in the
# background: a gateway must start while Redis is down, so a first attempt that failed ends the
# wait at once). A move of 10,000 keys takes longer.
STARTUP_LAYOUT_WAIT_S = 5.0


class RequestIdMiddleware:
    """Gives every request an id and every response an ``x-request-id`` header.

    Pure ASGI rather than ``BaseHTTPMiddleware``: that one costs a task per request and cancels
    the handler when the client leaves, which would abandon an upstream call already paid for.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(12)
        scope["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        if scope["path"] == images.PATH and scope["method"] == "POST":
            await images.serve_asgi(scope, receive, send_with_id)  # the hot path, straight in
            return
        await self.app(scope, receive, send_with_id)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as the OpenAI envelope, FastAPI's own ones included."""

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error = GatewayError(exc.status_code, str(exc.detail), "invalid_request_error", code, retry=False)
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        error = GatewayError(400, str(first["msg"]), "invalid_request_error", "invalid_request", param, False)
        return error.response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return internal_error().response()

    document_shared_errors(app)  # the schema says 400 (not FastAPI's 422), and what every route shares


class _GatewayApp(FastAPI):
    """FastAPI with the request id outermost, so even a 500 from its error middleware has one."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIdMiddleware(super().build_middleware_stack())


def build_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _start(settings)
        app.state.gateway = state
        try:
            yield
        finally:
            await _stop(state)

    app = _GatewayApp(
        title="Image generation gateway",
        version=__version__,
        description="OpenAI-compatible `POST /v1/images/generations` with team keys, exact "
        "budgets and a spend ledger.",
        lifespan=lifespan,
        docs_url=None,  # served by serve_docs_offline, with Swagger UI's files from the gateway
        redoc_url=None,
    )
    serve_docs_offline(app)
    _install_error_handlers(app)
    app.include_router(images.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(teams.router)
    app.include_router(reports.router)
    app.include_router(access.router)
    app.include_router(console.router)
    return app


async def _start(settings: Settings) -> GatewayState:
    if settings.redis_url is None:
        raise RuntimeError("GATEWAY_REDIS_URL is not set (gateway serve starts an embedded Redis)")
    _raise_open_files_limit(settings.max_inflight)
    redis = await redis_client.connect(settings.redis_url, settings.redis_max_connections)
    prices = await _price_book(redis, settings)
    router = build_router(settings, redis)
    await _export_zeros(redis, prices, router.names)
    spool = Spool(settings.state_dir / "spool", instance_name())
    directory = KeyDirectory(redis, ready=False)  # until the store's layout is confirmed
    state = GatewayState(
        settings=settings,
        redis=redis,
        router=router,
        prices=prices,
        keys=KeyStore(redis, directory),
        directory=directory,
        settler=Settler(redis, spool, settings.ledger_retention_days),
        observer=Observer(prices.model_label, _access_log(settings), settings.log_prompts),
        cancels=ReserveCancels(redis),
        admission=Admission(settings.max_inflight, settings.pending_per_client_cap),
        layout=LayoutKeeper(redis, directory),
        sweeper=OrphanSweeper(redis, settings.orphan_sweep_s),
    )
    await state.settler.learn_store_id()
    state.layout.start()
    await state.layout.wait(STARTUP_LAYOUT_WAIT_S)
    state.settler.replay_gate = lambda: state.layout.ready
    state.settler.start_replay()
    state.sweeper.start()
    state.router.start()
    state.alerts = alert_sender.from_settings(redis, settings, instance_name())
    if state.alerts is not None:
        state.alerts.start()
    else:
        await _warn_unsent_alerts(redis)
    if settings.drain_s > 0:
        _drain_before_exit(state.admission, settings.drain_s)
    _tune_gc()
    return state


ZERO_SERIES_TEAMS = 500  # teams whose images and spend start at 0 on the page (bounded)


async def _export_zeros(redis: Redis, prices: pricing.PriceBook, channels: list[str]) -> None:
    """Counters at 0 from the start (core/metrics.export_zeros), for the models and known teams."""
    try:
        teams = (await registered_teams(redis))[:ZERO_SERIES_TEAMS]
    except Exception as exc:  # Redis down at start: the per-team series come with their calls
        log.warning("teams not read for the metrics' zero series: %s", exc.__class__.__name__)
        teams = []
    metrics.export_zeros(prices.prices, teams, UPSTREAM_ERROR_REASONS, channels)


async def _warn_unsent_alerts(redis: Redis) -> None:
    """No webhook: say at start if thresholds are set or alerts wait, since none will be sent."""
    try:
        warning = await pending.unsent_warning(redis)
    except Exception as exc:  # Redis down at start: nothing to say yet
        log.debug("unsent alerts not checked: %s", exc.__class__.__name__)
        return
    if warning is not None:
        log.warning(warning)


def _access_log(settings: Settings) -> AccessLog:
    return AccessLog(enabled=settings.log_level in ("debug", "info"))


async def _price_book(redis: Redis, settings: Settings) -> pricing.PriceBook:
    prices = pricing.PriceBook(prices_file=settings.prices_file)
    try:
        await prices.refresh(redis)
    except Exception as exc:  # start even with Redis down: /readyz says so, requests get 503
        log.warning("could not load prices from Redis at start-up: %s", exc)
        prices.prices = pricing.configured_prices(settings.prices_file)
    prices.start(redis)
    return prices


def _raise_open_files_limit(max_inflight: int) -> None:
    """Raise this process's open-file limit: a call in flight holds two sockets.

    One to the caller, one to the upstream; the common default soft limit of 1,024 turns a burst
    of a few hundred calls into failed accepts. The soft limit goes up to the hard one; where that
    is below what GATEWAY_MAX_INFLIGHT needs, the hard limit too if allowed (root), else a warning.
    """
    need = 2 * max_inflight + 1024  # + Redis, the spool, metrics files, the listening socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(hard, need)
    for new_hard in (target, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
            break
        except (ValueError, OSError):
            continue
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "open-file limit %d is below the %d that GATEWAY_MAX_INFLIGHT=%d needs; "
            "raise it (ulimit -n, LimitNOFILE, the container's nofile) or expect failed accepts",
            soft,
            need,
            max_inflight,
        )


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections on the request path.

    With the default thresholds the collector took a large share of a worker's CPU under load,
    more the more requests were in flight, and full collections paused every request for tens of
    milliseconds. Freezing what start-up allocated (modules, the app, clients) takes it out of every
    later collection, and a larger first threshold makes young collections rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def _drain_before_exit(admission: Admission, drain_s: float) -> None:
    """On SIGTERM, fail readiness for ``drain_s`` while still serving, then let uvicorn exit.

    uvicorn has installed its own SIGTERM handler by the time the lifespan starts; it is wrapped
    here, so that load balancers see /readyz fail and stop sending traffic before the listening
    socket closes. uvicorn then finishes the requests in flight as usual.
    """
    loop = asyncio.get_running_loop()
    uvicorn_handler = signal.getsignal(signal.SIGTERM)
    if not callable(uvicorn_handler):
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        if admission.draining:
            return
        admission.draining = True
        log.info("SIGTERM: readiness fails now; exiting in %.1f s", drain_s)
        loop.call_soon_threadsafe(loop.call_later, drain_s, uvicorn_handler, signum, None)

    signal.signal(signal.SIGTERM, on_sigterm)


async def _stop(state: GatewayState) -> None:
    await state.layout.aclose()
    await state.sweeper.aclose()
    if state.alerts is not None:
        await state.alerts.stop()
    await state.settler.stop_replay()
    await state.cancels.aclose()
    await state.prices.stop()
    await state.router.aclose()
    await state.redis.aclose()


def create_app() -> FastAPI:
    """The factory uvicorn calls in each worker: settings from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return build_app(settings)
