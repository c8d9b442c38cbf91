"""``POST /v1/images/generations``: the public API, and the gateway's hot path.

The call goes through its steps top to bottom (gateway/call/): authenticate, validate, reserve,
forward, settle, observe. One Redis round trip before the upstream call (authenticate and
reserve, in one script) and one after it (settle). The caller's body is forwarded byte for byte
and the upstream's body returned byte for byte: multi-MB base64 images are never re-serialised,
and a Chinese prompt arrives exactly as sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.call import authenticate, forward, idempotent, injected_fault, reserve, settle, stream, validate
from gateway.call.admission import Gate
from gateway.call.client import client_has_left
from gateway.call.ending import Relayed
from gateway.call.log import CallLog
from gateway.call.relay import JsonRelay
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
    """One call, from arrival to its end: whatever it answers, it ends once, by :meth:`Attempt.end`."""
    state = state_of(request)
    call = CallLog(request_id=request.scope["request_id"], started=time.perf_counter())
    gate = Gate(state.admission, request.client.host if request.client else "unknown")
    attempt = Attempt(request, state, call, gate)
    try:
        response = await attempt.answer()
    except Exception as exc:  # a fault of the gateway's own: a 500, and the call ends like any other
        response = attempt.failed(exc)
    except BaseException:  # cancelled (the server is stopping): the call ends all the same
        await asyncio.shield(attempt.end(500))
        raise
    if isinstance(response, Relayed):  # in flight until its body has ended and it settled
        relayed = response

        async def end(whole: bool) -> None:
            if relayed.failure is not None:
                call.extra["error"] = relayed.failure.__class__.__name__
            await attempt.end(500 if relayed.failure is not None else 200)

        relayed.then(end)
        return relayed
    await attempt.end(response.status_code)
    return response


# Answers about the connection, not the body's content: given without checking the key first
# (a slow or vanished client learns nothing it did not know, and costs no Redis round trip).
TRANSPORT_ERRORS = frozenset({"body_timeout", "client_closed"})


class Attempt:
    """One call through its steps, and what it holds until it ends: its admission (``gate``) and,
    from reserve until it settles, its reservation (``hold``)."""

    def __init__(self, request: Request, state: GatewayState, call: CallLog, gate: Gate) -> None:
        self.request, self.state, self.call, self.gate = request, state, call, gate
        self.hold: tuple[Reservation, Periods] | None = None  # reserved, not yet settled
        self.key_id, self.unit_price = "", 0
        self.upstream_called = False  # the upstream may have made (and billed) images
        self.ended = False

    async def answer(self) -> Response:
        """The call's response: the answer, or the OpenAI error that refuses it."""
        try:
            return await self._generate()
        except GatewayError as error:
            if self.call.upstream_outcome is None:
                self.call.rejection = error.reason
            return error.response()

    def failed(self, exc: Exception) -> Response:
        """An unexpected exception: logged with the call's request id, answered with a 500."""
        log.error("request %s failed in the gateway", self.call.request_id, exc_info=exc)
        self.call.extra["error"] = exc.__class__.__name__
        return errors.internal_error(self.upstream_called).response()

    async def end(self, status: int) -> None:
        """The one way a call ends, once: a reservation still held is settled with no charge
        (flagged for reconciliation if the upstream may have been called); the admission slot is
        released; the call is counted and access-logged."""
        if self.ended:
            return
        self.ended = True
        try:
            if self.hold is not None:
                held, periods = self.hold
                self.call.images, self.call.failed_images = 0, {}  # nothing reached the caller whole
                order = self._order(held, periods, reconcile=self.upstream_called, outcome="internal_error")
                await self._settle(order)
        finally:
            self.gate.release()
            self.call.status = status
            if self.call.upstream_status == 200:  # its channel's health, now that its body was read
                self.state.router.ended(self.call.channel, self.call.upstream_outcome)
            self.state.observer.observe(self.call)

    async def _generate(self) -> Response:
        """Authenticate and validate; then generate, or replay an Idempotency-Key's first result.

        The call counts as pending for its client address until the reserve step has authenticated
        its key, and only then against the in-flight cap (see gateway/call/admission.py).
        """
        request, state, call = self.request, self.state, self.call
        token = authenticate.bearer_token(request)
        self.gate.arrive()
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
        if not state.router.serving(image_call.model):  # priced, yet no channel serves it
            call.team = (await authenticate.known_key(state.keys, token))["team"]
            raise state.router.refusal(image_call.model)
        self.key_id, self.unit_price = token.key_id, unit_price

        async def run() -> Response:
            return await self._run(token, image_call, body)

        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is None:
            return await run()
        if image_call.stream:  # a stream cannot be replayed: refused, the key checked first
            call.team = (await authenticate.known_key(state.keys, token))["team"]
            raise errors.bad_request("'Idempotency-Key' cannot be used with 'stream': true.", "stream")
        return await idempotent.run_once(
            run,
            redis=state.redis,
            keys=state.keys,
            call=call,
            token=token,
            idempotency_key=idempotency_key,
            body=body,
            pending_ms=settings.reservation_ttl_s * 1000,
            keep_s=settings.idempotency_ttl_s,
        )

    async def _run(self, token: authenticate.Token, image_call: validate.ImageCall, body: bytes) -> Response:
        """Reserve, forward (or stream), settle."""
        state, call = self.state, self.call
        periods = Periods.now()
        held = await reserve.reserve(
            state.redis,
            directory=state.directory,
            call=call,
            token=token,
            image_call=image_call,
            unit_price_micros=self.unit_price,
            lifetime_ms=state.settings.reservation_ttl_s * 1000,
            periods=periods,
            cancels=state.cancels,
        )
        self.hold = (held, periods)
        try:
            self.gate.admit()
        except GatewayError:  # over the in-flight cap: free the reservation, record no charge
            await self._settle(self._order(held, periods, reconcile=False, outcome="overloaded"))
            raise
        self.upstream_called = True
        if image_call.stream:
            return await self._stream(held, periods, body)
        verdict = await forward.forward(state.router, body, call)
        if verdict.reply is not None and verdict.scanner is not None:  # settled once read and counted

            async def settle_relayed(reconcile: bool) -> object:
                injected_fault.trip(body)
                return await self._settle(self._order(held, periods, reconcile=reconcile))

            mask, headers = state.router.mask, rate_limit_headers(held)
            return JsonRelay(
                verdict.reply, call, mask, settle_relayed, headers, verdict.scanner, verdict.head
            )
        if verdict.error is None:
            call.client_left = client_has_left(self.request.receive)
        injected_fault.trip(body)
        settled = await self._settle(self._order(held, periods, reconcile=verdict.reconcile))
        if verdict.error is not None or verdict.body is None:
            raise verdict.error or errors.internal_error()
        headers = success_headers(call, held, settled)
        return Response(verdict.body, 200, headers, media_type="application/json")

    async def _stream(self, held: Reservation, periods: Periods, body: bytes) -> Response:
        """``"stream": true``: the events relayed as they come, settled when the upstream's ends."""

        async def settle_stream(reconcile: bool) -> None:
            injected_fault.trip(body)
            await self._settle(self._order(held, periods, reconcile=reconcile))

        settings = self.state.settings
        return await stream.open_relay(
            self.state.router,
            body,
            self.call,
            settle=settle_stream,
            headers=rate_limit_headers(held),
            idle_timeout_s=settings.upstream_stream_idle_timeout_s,
            total_timeout_s=settings.upstream_timeout_s,
            receive=self.request.receive,
        )

    async def _settle(self, order: settle.SettleOrder) -> Settlement | None:
        self.hold = None  # settled, or spooled to be: nothing is left to release
        return await self.state.settler.settle(order)

    def _order(
        self, held: Reservation, periods: Periods, *, reconcile: bool, outcome: str | None = None
    ) -> settle.SettleOrder:
        return settle.order_for(
            self.call,
            key_id=self.key_id,
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

    FastAPI's routing and middleware layers do nothing this route needs, on every call; this
    path skips them. The FastAPI route stays registered for /docs and behaves the same, since
    both call :func:`create_image`.
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
