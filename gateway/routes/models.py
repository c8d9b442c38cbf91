"""``GET /v1/models``: the models the caller's key may use, in OpenAI's list format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.call.authenticate import bearer_token, known_key
from gateway.money import micros_to_usd
from gateway.responses import json_response
from gateway.state import state_of

router = APIRouter()

CREATED = 1_730_000_000  # the upstream does not say when a model appeared; a fixed, valid time


@router.get("/v1/models", summary="List the models this key may use")
async def list_models(request: Request) -> Response:
    state = state_of(request)
    record = await known_key(state.keys, bearer_token(request))
    allowed = {m for m in record.get("models", "").split(",") if m}
    data = [
        {
            "id": model,
            "object": "model",
            "created": CREATED,
            "owned_by": "bytedance-seedream",
            "price_usd_per_image": micros_to_usd(price),
        }
        for model, price in sorted(state.prices.prices.items())
        if not allowed or model in allowed
    ]
    return json_response({"object": "list", "data": data})
