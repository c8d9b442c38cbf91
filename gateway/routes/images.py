"""``POST /v1/images/generations``: the public API, and the gateway's hot path.

One Redis round trip before the upstream call (authenticate and reserve, in one script) and one
after it (settle). The caller's body is forwarded byte for byte and the upstream's body returned
byte for byte: multi-MB base64 images are never re-serialised, and a Chinese prompt arrives
exactly as sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from redis.exceptions import RedisError

from gateway import budget, errors, idempotency
from gateway.errors import ErrorResponse, GatewayError
from gateway.openai_compat import conform_images_body
from gateway.pricing import micros_to_usd
from gateway.state import GatewayState, bearer_token, read_json_body
from gateway.upstream import UpstreamFailure, bad_response_error, map_error_reply
from gateway.validation import ImageCall, ImageGenerationRequest, validate_image_request

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
        409: "Idempotency-Key reused with a different body.",
        413: "Body too large.",
        415: "Not JSON.",
        429: "Budget exhausted (insufficient_quota) or rate limited (rate_limit_exceeded).",
        502: "The upstream failed.",
        503: "Redis unavailable.",
        504: "The upstream timed out.",
    }.items()
}


@dataclass
class CallLog:
    """What one call did, for the access log, the metrics and the ledger."""

    request_id: str
    started: float
    model: str = "-"
    team: str = "unknown"
    key_id: str | None = None
    n: int = 0
    images: int = 0
    charge_micros: int = 0
    status: int = 0
    upstream_status: int | None = None
    upstream_latency_s: float | None = None
    upstream_outcome: str | None = None  # ok, timeout, connect, 5xx, ...: set once it was called
    rejection: str | None = None  # why the gateway refused it before the upstream
    client_left: bool = False
    prompt: str | None = None  # only with GATEWAY_LOG_PROMPTS=true
    extra: dict[str, Any] = field(default_factory=dict)


@router.post(
    "/v1/images/generations",
    summary="Create images",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ImageGenerationRequest.model_json_schema()}},
        }
    },
    responses={200: {"description": "The upstream's ImagesResponse, unchanged."}, **ERROR_RESPONSES},
)
async def create_image(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    call = CallLog(request_id=request.scope["request_id"], started=time.perf_counter())
    state.inflight += 1
    state.metrics_inflight.inc()
    try:
        if state.inflight > state.settings.max_inflight:
            raise errors.overloaded(state.settings.max_inflight)
        response = await _handle(request, state, call)
    except GatewayError as error:
        if call.upstream_outcome is None:
            call.rejection = error.reason
        response = error.response()
    finally:
        state.inflight -= 1
        state.metrics_inflight.dec()
    call.status = response.status_code
    state.observe(call)
    return response


@dataclass
class Attempt:
    """A validated call on its way through reserve, upstream and settle."""

    request: Request
    state: GatewayState
    call: CallLog
    token: tuple[str, str]  # (key_id, sha256 of the presented key)
    image_call: ImageCall
    body: bytes  # the caller's bytes, forwarded as they are
    unit_price: int


async def _handle(request: Request, state: GatewayState, call: CallLog) -> Response:
    token = bearer_token(request)
    try:
        image_call, body = await _read_call(request, state)
    except GatewayError:
        # The key is checked first: a caller with a bad key learns nothing about its body.
        call.team = (await state.authenticate_or_raise(token))["team"]
        raise
    call.model, call.n = image_call.model, image_call.n
    if state.settings.log_prompts:  # off by default: prompts can hold personal data
        call.prompt = orjson.loads(body).get("prompt")
    unit_price = state.prices.get(image_call.model)
    if unit_price is None:
        call.team = (await state.authenticate_or_raise(token))["team"]
        raise errors.model_not_found(image_call.model)
    attempt = Attempt(request, state, call, token, image_call, body, unit_price)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        return await _reserve_and_forward(attempt)
    return await _idempotent(attempt, idempotency_key)


async def _idempotent(attempt: Attempt, idempotency_key: str) -> Response:
    """Replay the first result of a repeated Idempotency-Key; otherwise go ahead and keep it."""
    state, call = attempt.state, attempt.call
    idempotency.check_key(idempotency_key)
    call.team = (await state.authenticate_or_raise(attempt.token))["team"]
    key_id = attempt.token[0]
    try:
        replay = await idempotency.begin(
            state.redis, key_id, idempotency_key, attempt.body, state.reservation_ttl_ms, call.request_id
        )
    except (RedisError, OSError) as exc:
        state.redis_failed(exc)
        raise errors.redis_unavailable() from None
    if replay is not None:
        call.extra["idempotent_replay"] = True
        headers = {**replay.headers, "x-idempotent-replayed": "true"}
        return Response(replay.body, replay.status, headers, media_type="application/json")
    response: Response | None = None
    try:
        response = await _reserve_and_forward(attempt)
        return response
    finally:
        await _finish_idempotent(state, key_id, idempotency_key, response)


async def _finish_idempotent(
    state: GatewayState, key_id: str, idempotency_key: str, response: Response | None
) -> None:
    try:
        if response is not None and response.status_code == 200:
            headers = {k: v for k, v in response.headers.items() if k.startswith("x-gateway-")}
            await idempotency.complete(
                state.redis,
                key_id,
                idempotency_key,
                200,
                headers,
                bytes(response.body),
                state.settings.idempotency_ttl_s,
            )
        else:
            await idempotency.abandon(state.redis, key_id, idempotency_key)
    except Exception as exc:  # the images are delivered: never turn that into an error
        state.redis_failed(exc)


async def _reserve_and_forward(attempt: Attempt) -> Response:
    state, call, image_call = attempt.state, attempt.call, attempt.image_call
    key_id, secret_hash = attempt.token
    periods = budget.Periods.now()
    try:
        held = await budget.reserve(
            state.redis,
            key_id,
            secret_hash,
            image_call.model,
            call.request_id,
            image_call.max_images,
            attempt.unit_price,
            state.reservation_ttl_ms,
            periods,
        )
    except (RedisError, OSError) as exc:
        state.redis_failed(exc)
        raise errors.redis_unavailable() from None
    if isinstance(held, budget.Denial):
        call.team = held.team or "unknown"
        raise state.denial_error(held, image_call)
    call.team, call.key_id = held.team, key_id
    return await _forward(attempt, held, periods)


async def _read_call(request: Request, state: GatewayState) -> tuple[ImageCall, bytes]:
    body, payload = await read_json_body(request, state.settings.max_body_bytes)
    return validate_image_request(payload, state.settings.max_prompt_chars), body


async def _forward(attempt: Attempt, held: budget.Reservation, periods: budget.Periods) -> Response:
    """Call the upstream, settle what it delivered, and answer the caller."""
    state, call = attempt.state, attempt.call

    async def settle(reconcile: bool = False) -> budget.Settlement | None:
        return await state.settle(call, held, attempt.unit_price, periods, reconcile=reconcile)

    try:
        reply = await state.upstream.generate(attempt.body)
    except UpstreamFailure as failure:
        call.upstream_latency_s, call.upstream_outcome = failure.latency_s, failure.reason
        await settle()
        raise failure.error from None

    call.upstream_status, call.upstream_latency_s = reply.status, reply.latency_s
    if reply.status != 200:
        call.upstream_outcome, error = map_error_reply(reply, state.upstream.redact)
        await settle()
        raise error

    delivered = deliverable(reply.body)
    del reply  # with multi-MB images, keep one copy of the answer in memory, not two
    if delivered is None:
        call.upstream_outcome = "bad_response"
        await settle(reconcile=True)
        raise bad_response_error()

    call.images, body = delivered
    call.upstream_outcome = "ok"
    call.client_left = client_has_left(attempt.request.receive)
    settled = await settle()
    headers = {"x-gateway-cost-usd": micros_to_usd(call.charge_micros)}
    if settled is not None and settled.budget_micros >= 0:
        remaining = settled.budget_micros - settled.spent_micros - settled.reserved_micros
        headers["x-gateway-budget-remaining-usd"] = micros_to_usd(max(0, remaining))
    headers.update(rate_limit_headers(held))
    return Response(body, 200, headers, media_type="application/json")


def deliverable(raw: bytes) -> tuple[int, bytes] | None:
    """(images to charge for, body for the caller) of a 200 answer; None if it is unreadable.

    The parsed copy lives only inside this function, so it is freed before the answer is sent.
    """
    payload = parse_images_body(raw)
    if payload is None:
        return None
    return len(payload["data"]), conform_images_body(raw, payload)


def client_has_left(receive: Any) -> bool:
    """Whether the caller hung up, without waiting: one step of ``receive()``, never a suspension.

    Starlette's ``is_disconnected`` builds an anyio cancel scope per call (4% of the gateway's
    CPU in the profile). The server's receive answers at once when the client is gone and
    otherwise waits for a message; stepping its coroutine once tells the two apart.
    """
    step = receive()
    try:
        step.send(None)
    except StopIteration as done:
        return bool(done.value.get("type") == "http.disconnect")
    step.close()
    return False


async def serve_asgi(scope: Any, receive: Any, send: Any) -> None:
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


def parse_images_body(body: bytes) -> dict[str, Any] | None:
    """A 200 body with its ``data`` list (the images to charge for); None if it is not that."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return None
    return payload


def rate_limit_headers(held: budget.Reservation) -> dict[str, str]:
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
