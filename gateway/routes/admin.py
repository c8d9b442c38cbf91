"""The admin API under ``/admin/v1``: keys, their usage and prices (reports: reports.py).

Guarded by ``Authorization: Bearer $GATEWAY_ADMIN_TOKEN`` compared in constant time; with no
token configured every admin route answers 503 rather than being open. A team key is never an
admin token: they are different secrets with different prefixes. Wrong tokens are rate-limited
per client address and every change is audited (gateway/admin/auth.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from gateway.admin import auth as admin_auth
from gateway.admin.key_listing import DEFAULT_PER_PAGE, MAX_PER_PAGE, key_page
from gateway.admin.keys import KeyCreate, KeyLimits, RotateRequest, shown_key_id
from gateway.admin.usage_report import usage_report
from gateway.core.errors import GatewayError, not_found, redis_unavailable
from gateway.core.model_names import check_model_name
from gateway.money import pricing
from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.routes.responses import json_response
from gateway.state import GatewayState, state_of

T = TypeVar("T")


async def require_admin(request: Request) -> GatewayState:
    state = state_of(request)
    token = state.settings.admin_token
    if token is None:
        raise GatewayError(
            503,
            "The admin API is disabled: set GATEWAY_ADMIN_TOKEN to enable it.",
            "server_error",
            "admin_disabled",
            retry=False,
        )
    # Before the token is even compared: an address cooling off learns nothing from its guesses.
    await admin_auth.limiter_of(request).check(admin_auth.client_address(request))
    header = request.headers.get("authorization")
    scheme, _, presented = (header or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        if header is not None:  # a credential was presented and was wrong: a guess (no header: none)
            await admin_auth.record_failure(request, via="api")
        raise GatewayError(
            401,
            "A valid admin token is required.",
            "invalid_request_error",
            "invalid_admin_token",
            retry=False,
            reason="invalid_key",
        )
    return state


router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])


async def guard_redis(awaitable: Awaitable[T]) -> T:
    """Run a Redis operation, turning an outage into the 503 envelope."""
    try:
        return await awaitable
    except (RedisError, OSError):
        raise redis_unavailable() from None


def _found(value: Any, key_id: str) -> Any:
    if value is None:
        raise not_found(f"No key with {shown_key_id(key_id)}.")
    return value


@router.post("/keys", status_code=201, summary="Issue a key (its secret is shown only here)")
async def create_key(spec: KeyCreate, request: Request) -> Response:
    token, record = await guard_redis(state_of(request).keys.create(spec))
    admin_auth.audit(request, "key.create", via="api", key_id=record["key_id"], team=record["team"])
    return json_response({**record, "key": token}, status_code=201)


@router.get("/keys", summary="List keys, a page at a time, by team and name (never their secrets)")
async def list_keys(
    request: Request,
    team: str | None = None,
    q: str | None = Query(default=None, max_length=200, description="In a name or team; a key_id's start."),
    page: int = Query(default=1, ge=1, le=1_000_000),
    per_page: int = Query(default=DEFAULT_PER_PAGE, ge=1, le=MAX_PER_PAGE),
) -> Response:
    listing = key_page(state_of(request).redis, team=team, search=q, page=page, per_page=per_page)
    return json_response((await guard_redis(listing)).as_json())


@router.get("/keys/{key_id}", summary="Show a key")
async def show_key(key_id: str, request: Request) -> Response:
    return json_response(_found(await guard_redis(state_of(request).keys.get(key_id)), key_id))


@router.patch("/keys/{key_id}", summary="Change a key's limits (only the fields given)")
async def update_key(key_id: str, limits: KeyLimits, request: Request) -> Response:
    record = _found(await guard_redis(state_of(request).keys.update(key_id, limits)), key_id)
    admin_auth.audit(request, "key.update", via="api", key_id=key_id, fields=sorted(limits.model_fields_set))
    return json_response(record)


@router.delete("/keys/{key_id}", summary="Revoke a key, at once, on every replica")
async def revoke_key(key_id: str, request: Request) -> Response:
    record = _found(await guard_redis(state_of(request).keys.revoke(key_id)), key_id)
    admin_auth.audit(request, "key.revoke", via="api", key_id=key_id)
    return json_response(record)


@router.post("/keys/{key_id}/rotate", summary="A new secret for the same key, limits and spend")
async def rotate_key(key_id: str, request: Request, body: RotateRequest | None = None) -> Response:
    grace = (body or RotateRequest()).grace_seconds
    token, record = _found(await guard_redis(state_of(request).keys.rotate(key_id, grace)), key_id)
    admin_auth.audit(request, "key.rotate", via="api", key_id=key_id, grace_seconds=grace)
    return json_response({**record, "key": token, "previous_key_valid_for_s": grace})


@router.get("/keys/{key_id}/usage", summary="A key's budget, spend and reservations now")
async def key_usage(key_id: str, request: Request) -> Response:
    state = state_of(request)
    space = _found(await guard_redis(state.keys.space_of(key_id)), key_id)
    return json_response(await guard_redis(usage_report(state.redis, space)))


@router.get("/prices", summary="The price table and its history")
async def list_prices(request: Request) -> Response:
    state = state_of(request)
    prices = await guard_redis(pricing.read_prices(state.redis))
    history = await guard_redis(pricing.price_history(state.redis))
    return json_response(
        {
            "object": "list",
            "data": [
                {"model": m, "price_usd": micros_to_usd(p), "unit": "image"}
                for m, p in sorted(prices.items())
            ],
            "history": [change.as_json() for change in history],
        }
    )


class PriceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as every admin body: an unknown field is a 400

    price_usd: str = Field(description='USD per image, at most six decimals, e.g. "0.135".')


@router.put("/prices/{model}", summary="Set a model's price (adds the model if new)")
async def set_price(model: str, update: PriceUpdate, request: Request) -> Response:
    try:
        micros = usd_to_micros(update.price_usd)
    except ValueError as exc:
        raise GatewayError(
            400, str(exc), "invalid_request_error", "invalid_price", "price_usd", False
        ) from None
    try:
        check_model_name(model)
    except ValueError as exc:
        raise GatewayError(400, str(exc), "invalid_request_error", "invalid_model", "model", False) from None
    state = state_of(request)
    change = await guard_redis(pricing.set_price(state.redis, model, micros, "admin-api"))
    admin_auth.audit(request, "price.set", via="api", model=model, price_usd=micros_to_usd(micros))
    await guard_redis(state.prices.refresh(state.redis))
    return json_response(change.as_json())


@router.delete("/prices/{model}", summary="Stop serving a model")
async def delete_price(model: str, request: Request) -> Response:
    state = state_of(request)
    change = await guard_redis(pricing.set_price(state.redis, model, None, "admin-api"))
    admin_auth.audit(request, "price.delete", via="api", model=model)
    await guard_redis(state.prices.refresh(state.redis))
    return json_response(change.as_json())
