"""``POST /v1/images/generations``: the public API, and the gateway's hot path.

The call goes through its steps top to bottom (gateway/call/): authenticate, validate, reserve,
forward, settle, observe. One Redis round trip before the upstream call (authenticate and
reserve, in one script) and one after it (settle). The caller's body is forwarded byte for byte
and the upstream's body returned byte for byte: multi-MB base64 images are never re-serialised,
and a Chinese prompt arrives exactly as sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.call import authenticate, forward, idempotent, reserve, settle, stream, validate
from gateway.call.admission import Gate
from gateway.call.client import client_has_left
from gateway.call.log import CallLog
from gateway.call.relay import StreamedAnswer
from gateway.core import errors
from gateway.core.errors import ErrorResponse, GatewayError
from gateway.money.budget import Reservation, Settlement
from gateway.money.micros import micros_to_usd
from gateway.money.periods import Periods
from gateway.state import GatewayState, state_of

router = APIRouter()
log = logging.getLogger("gateway")

PATH = "/v1/images/generations"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "model": ErrorResponse}
    for status, text in {
        400: "Invalid request, or refused by the upstream (content safety, its own limits).",
        401: "Missing, unknown, revoked or expired key.",
        403: "The key may not use this model.",
        404: "Unknown model.",
        408: "The body did not arrive within GATEWAY_BODY_TIMEOUT_S (the connection is closed).",
        409: "Idempotency-Key reused with a different body.",
        413: "Body too large.",
        415: "Not JSON.",
        429: "Budget exhausted (insufficient_quota) or rate limited (rate_limit_exceeded; also when "
        "one client address has too many requests not yet authenticated).",
        502: "The upstream failed.",
        503: "Redis unavailable.",
        504: "The upstream timed out.",
    }.items()
}


@router.post(
    PATH,
    summary="Create images",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": validate.ImageGenerationRequest.model_json_schema()}},
        }
    },
    responses={
        200: {
            "description": 'The upstream\'s ImagesResponse, unchanged; with "stream": true, its '
            "server-sent events, relayed as they come.",
            "content": {"application/json": {}, "text/event-stream": {"schema": {"type": "string"}}},
        },
        **ERROR_RESPONSES,
    },
)
async def create_image(request: Request) -> Response:
    state = state_of(request)
    call = CallLog(request_id=request.scope["request_id"], started=time.perf_counter())
    gate = Gate(state.admission, request.client.host if request.client else "unknown")
    response: Response | None = None
    try:
        response = await _generate(request, state, call, gate)
    except GatewayError as error:
        if call.upstream_outcome is None:
            call.rejection = error.reason
        response = error.response()
    except BaseException:
        gate.release()
        raise
    # A streamed response is in flight, and observed, until its body has ended and it settled.
    if isinstance(response, stream.Relay):
        response.when_done(lambda: _done(state, call, gate, 200))
        return response
    if isinstance(response, StreamedAnswer):
        response.on_done = lambda: _done(state, call, gate, 200)
        return response
    _done(state, call, gate, response.status_code)
    return response


def _done(state: GatewayState, call: CallLog, gate: Gate, status: int) -> None:
    gate.release()
    call.status = status
    state.observer.observe(call)


# Answers about the connection, not the body's content: given without checking the key first
# (a slow or vanished client learns nothing it did not know, and costs no Redis round trip).
TRANSPORT_ERRORS = frozenset({"body_timeout", "client_closed"})


async def _generate(request: Request, state: GatewayState, call: CallLog, gate: Gate) -> Response:
    """Authenticate and validate; then generate, or replay an Idempotency-Key's first result.

    The call counts as pending for its client address until the reserve step has authenticated
    its key, and only then against the in-flight cap (see gateway/call/admission.py).
    """
    token = authenticate.bearer_token(request)
    gate.arrive()
    settings = state.settings
    try:
        image_call, body = await validate.read_call(
            request, settings.max_body_bytes, settings.max_prompt_chars, settings.body_timeout_s
        )
    except GatewayError as error:
        if error.reason not in TRANSPORT_ERRORS:
            # The key is checked first: a caller with a bad key learns nothing about its body.
            call.team = (await authenticate.known_key(state.keys, token))["team"]
        raise
    call.model, call.n, call.user = image_call.model, image_call.n, image_call.user
    if settings.log_prompts:  # off by default: prompts can hold personal data
        call.prompt = orjson.loads(body).get("prompt")
    unit_price = state.prices.get(image_call.model)
    if unit_price is None:
        record = await authenticate.known_key(state.keys, token)
        call.team = record["team"]
        usable = authenticate.usable_models(record, state.prices.prices)
        raise errors.model_not_found(image_call.model, list(usable))
    attempt = Attempt(request, state, call, token, image_call, body, unit_price, gate)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        return await attempt.run()
    if image_call.stream:  # a stream cannot be replayed: refused, the key checked first
        call.team = (await authenticate.known_key(state.keys, token))["team"]
        raise errors.bad_request("'Idempotency-Key' cannot be used with 'stream': true.", "stream")
    return await idempotent.run_once(
        attempt.run,
        redis=state.redis,
        keys=state.keys,
        call=call,
        token=token,
        idempotency_key=idempotency_key,
        body=body,
        pending_ms=settings.reservation_ttl_s * 1000,
        keep_s=settings.idempotency_ttl_s,
    )


class Attempt:
    """A validated call on its way through reserve, forward and settle."""

    def __init__(
        self,
        request: Request,
        state: GatewayState,
        call: CallLog,
        token: authenticate.Token,
        image_call: validate.ImageCall,
        body: bytes,
        unit_price: int,
        gate: Gate,
    ) -> None:
        self.request, self.state, self.call, self.token = request, state, call, token
        self.image_call, self.body, self.unit_price = image_call, body, unit_price
        self.gate = gate

    async def run(self) -> Response:
        state, call = self.state, self.call
        periods = Periods.now()
        held = await reserve.reserve(
            state.redis,
            directory=state.directory,
            call=call,
            token=self.token,
            image_call=self.image_call,
            unit_price_micros=self.unit_price,
            lifetime_ms=state.settings.reservation_ttl_s * 1000,
            periods=periods,
            cancels=state.cancels,
        )
        try:
            self.gate.admit()
        except GatewayError:  # over the in-flight cap: free the reservation, record no charge
            await state.settler.settle(self._order(held, periods, reconcile=False, outcome="overloaded"))
            raise
        if self.image_call.stream:
            return await self._stream(held, periods)
        forwarded = await forward.forward(state.upstream, self.body, call)
        if forwarded.streamed is not None:  # settled once its body has been read and counted

            async def settle_streamed(reconcile: bool) -> object:
                return await state.settler.settle(self._order(held, periods, reconcile=reconcile))

            return StreamedAnswer(
                forwarded.streamed,
                call,
                state.upstream.secret,
                settle_streamed,
                rate_limit_headers(held),
            )
        if forwarded.error is None:
            call.client_left = client_has_left(self.request.receive)
        settled = await state.settler.settle(self._order(held, periods, reconcile=forwarded.reconcile))
        if forwarded.error is not None or forwarded.body is None:
            raise forwarded.error or errors.internal_error()
        return Response(
            forwarded.body, 200, success_headers(call, held, settled), media_type="application/json"
        )

    async def _stream(self, held: Reservation, periods: Periods) -> Response:
        """``"stream": true``: the events relayed as they come, settled when the upstream's ends."""

        async def settle_stream(reconcile: bool) -> None:
            await self.state.settler.settle(self._order(held, periods, reconcile=reconcile))

        settings = self.state.settings
        return await stream.open_relay(
            self.state.upstream,
            self.body,
            self.call,
            settle=settle_stream,
            headers=rate_limit_headers(held),
            idle_timeout_s=settings.upstream_stream_idle_timeout_s,
            total_timeout_s=settings.upstream_timeout_s,
            receive=self.request.receive,
        )

    def _order(
        self, held: Reservation, periods: Periods, *, reconcile: bool, outcome: str | None = None
    ) -> settle.SettleOrder:
        return settle.order_for(
            self.call,
            key_id=self.token.key_id,
            held=held,
            unit_price_micros=self.unit_price,
            periods=periods,
            reconcile=reconcile,
            outcome=outcome,
        )


def success_headers(call: CallLog, held: Reservation, settled: Settlement | None) -> dict[str, str]:
    headers = {"x-gateway-cost-usd": micros_to_usd(call.charge_micros)}
    remaining = settled.remaining_micros if settled is not None else None
    if remaining is not None:
        headers["x-gateway-budget-remaining-usd"] = micros_to_usd(remaining)
    headers.update(rate_limit_headers(held))
    return headers


async def serve_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """The image route as plain ASGI, called by the app's outermost middleware.

    FastAPI's routing and middleware layers cost about a quarter of a worker's CPU per request
    in the profile; this path skips them. The FastAPI route stays registered for /docs and
    behaves the same, since both call :func:`create_image`.
    """
    request = Request(scope, receive)
    try:
        response = await create_image(request)
    except Exception:
        log.exception("unhandled error on the image route")
        response = errors.internal_error().response()
    await response(scope, receive, send)


def rate_limit_headers(held: Reservation) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, for keys with a requests-per-minute limit."""
    if held.rpm <= 0:
        return {}
    return {
        "x-ratelimit-limit-requests": str(held.rpm),
        "x-ratelimit-remaining-requests": str(max(0, held.rpm_remaining)),
        "x-ratelimit-reset-requests": format_duration_ms(held.rpm_reset_ms),
    }


def format_duration_ms(ms: int) -> str:
    """OpenAI's duration style: ``850ms``, ``12s``, ``1m3s``."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    seconds = -(-ms // 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
