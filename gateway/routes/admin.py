"""The admin API under ``/admin/v1``: keys, their usage and prices (reports: reports.py).

Guarded by ``Authorization: Bearer`` with the root ``GATEWAY_ADMIN_TOKEN`` or a named credential
(routes/access_control.py); with no root token configured every admin route answers 503 rather
than being open. Each route names what it does (``allow(Permission.X)``); a team-admin sees and
changes only its teams' keys (``_visible_key``). A team key is never an admin token. Wrong tokens
are rate-limited per client address and every change is audited with its actor.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from gateway.admin.key_listing import DEFAULT_PER_PAGE, MAX_PER_PAGE, key_page
from gateway.admin.keys import KeyCreate, KeyLimits, RotateRequest, shown_key_id
from gateway.admin.roles import Permission, Principal
from gateway.admin.usage_report import usage_report
from gateway.core.errors import GatewayError, not_found, redis_unavailable
from gateway.core.model_names import check_model_name
from gateway.money import pricing
from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.routes.access_control import allow, audited, authenticate, current
from gateway.routes.responses import json_response
from gateway.state import state_of
from gateway.store.keyspace import KeySpace

T = TypeVar("T")


async def require_admin(request: Request) -> Principal:
    """Any valid admin credential (the root token or a named one); what it may do is per route."""
    return await authenticate(request)


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


async def visible_key(request: Request, key_id: str) -> KeySpace:
    """The key's state, if it exists and the caller (API or console) sees its team; else 404, as if
    it did not exist."""
    space = await guard_redis(state_of(request).keys.space_of(key_id))
    if space is None or not current(request).sees(space.team):
        raise not_found(f"No key with {shown_key_id(key_id)}.")
    return space


READ = [Depends(allow(Permission.READ))]
KEYS = [Depends(allow(Permission.KEYS))]
PRICES = [Depends(allow(Permission.PRICES))]


@router.post("/keys", status_code=201, summary="Issue a key (its secret is shown once)", dependencies=KEYS)
async def create_key(spec: KeyCreate, request: Request) -> Response:
    current(request).require_team(Permission.KEYS, spec.team)
    token, record = await guard_redis(state_of(request).keys.create(spec))
    await audited(request, "key.create", key_id=record["key_id"], team=record["team"])
    return json_response({**record, "key": token}, status_code=201)


@router.get(
    "/keys", summary="List keys, a page at a time, by team and name (never their secrets)", dependencies=READ
)
async def list_keys(
    request: Request,
    team: str | None = None,
    q: str | None = Query(default=None, max_length=200, description="In a name or team; a key_id's start."),
    page: int = Query(default=1, ge=1, le=1_000_000),
    per_page: int = Query(default=DEFAULT_PER_PAGE, ge=1, le=MAX_PER_PAGE),
) -> Response:
    teams = current(request).scope(team)  # a team-admin's list holds its own teams' keys only
    listing = key_page(state_of(request).redis, teams=teams, search=q, page=page, per_page=per_page)
    return json_response((await guard_redis(listing)).as_json())


@router.get("/keys/{key_id}", summary="Show a key", dependencies=READ)
async def show_key(key_id: str, request: Request) -> Response:
    await visible_key(request, key_id)
    return json_response(_found(await guard_redis(state_of(request).keys.get(key_id)), key_id))


@router.patch("/keys/{key_id}", summary="Change a key's limits (only the fields given)", dependencies=KEYS)
async def update_key(key_id: str, limits: KeyLimits, request: Request) -> Response:
    await visible_key(request, key_id)
    record = _found(await guard_redis(state_of(request).keys.update(key_id, limits)), key_id)
    await audited(request, "key.update", key_id=key_id, fields=sorted(limits.model_fields_set))
    return json_response(record)


@router.delete("/keys/{key_id}", summary="Revoke a key, at once, on every replica", dependencies=KEYS)
async def revoke_key(key_id: str, request: Request) -> Response:
    await visible_key(request, key_id)
    record = _found(await guard_redis(state_of(request).keys.revoke(key_id)), key_id)
    await audited(request, "key.revoke", key_id=key_id)
    return json_response(record)


@router.post(
    "/keys/{key_id}/rotate", summary="A new secret for the same key, limits and spend", dependencies=KEYS
)
async def rotate_key(key_id: str, request: Request, body: RotateRequest | None = None) -> Response:
    grace = (body or RotateRequest()).grace_seconds
    await visible_key(request, key_id)
    token, record = _found(await guard_redis(state_of(request).keys.rotate(key_id, grace)), key_id)
    await audited(request, "key.rotate", key_id=key_id, grace_seconds=grace)
    return json_response({**record, "key": token, "previous_key_valid_for_s": grace})


@router.get("/keys/{key_id}/usage", summary="A key's budget, spend and reservations now", dependencies=READ)
async def key_usage(key_id: str, request: Request) -> Response:
    space = await visible_key(request, key_id)
    return json_response(await guard_redis(usage_report(state_of(request).redis, space)))


@router.get("/prices", summary="The price table and its history", dependencies=READ)
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


@router.put("/prices/{model}", summary="Set a model's price (adds the model if new)", dependencies=PRICES)
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
    await audited(request, "price.set", model=model, price_usd=micros_to_usd(micros))
    await guard_redis(state.prices.refresh(state.redis))
    return json_response(change.as_json())


@router.delete("/prices/{model}", summary="Stop serving a model", dependencies=PRICES)
async def delete_price(model: str, request: Request) -> Response:
    state = state_of(request)
    change = await guard_redis(pricing.set_price(state.redis, model, None, "admin-api"))
    await audited(request, "price.delete", model=model)
    await guard_redis(state.prices.refresh(state.redis))
    return json_response(change.as_json())
