"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models the caller's key may use, in OpenAI's
format; and the OpenAI image routes the gateway does not serve, answered with where to go instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.call.authenticate import bearer_token, known_key, usable_models
from gateway.core import errors
from gateway.core.errors import ErrorResponse, GatewayError
from gateway.money.micros import micros_to_usd
from gateway.routes.responses import json_response
from gateway.state import GatewayState, state_of

router = APIRouter()

CREATED = 1_730_000_000  # the upstream does not say when a model appeared; a fixed, valid time


def _model(model: str, price: int) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": CREATED,
        "owned_by": "bytedance-seedream",
        "price_usd_per_image": micros_to_usd(price),
    }


async def _visible(request: Request) -> tuple[GatewayState, dict[str, int]]:
    """The models this key may use, with their prices: an empty allow-list means all of them."""
    state = state_of(request)
    record = await known_key(state.keys, bearer_token(request))
    return state, usable_models(record, state.prices.prices)


@router.get("/v1/models", summary="List the models this key may use")
async def list_models(request: Request) -> Response:
    _, visible = await _visible(request)
    return json_response({"object": "list", "data": [_model(m, p) for m, p in visible.items()]})


@router.get(
    "/v1/models/{model_id:path}",
    summary="Retrieve one model this key may use",
    responses={404: {"description": "Unknown model, or one this key may not use.", "model": ErrorResponse}},
)
async def retrieve_model(model_id: str, request: Request) -> Response:
    """Like the list: a model the key may not use is not found, as OpenAI answers for them."""
    _, visible = await _visible(request)
    if model_id not in visible:
        raise errors.model_not_found(model_id, list(visible))
    return json_response(_model(model_id, visible[model_id]))


def _image_to_image(route: str) -> GatewayError:
    """OpenAI SDK users reach for edits/variations; the upstream does image-to-image differently."""
    return GatewayError(
        404,
        f"{route} is not served by this gateway. For image-to-image, call POST "
        "/v1/images/generations with the source image (a URL or a data: URI) in the 'image' field.",
        "invalid_request_error",
        "unsupported_endpoint",
        None,
        False,
        reason="not_found",
    )


# Not in the OpenAPI document: they are not part of the API, only a signpost for SDK users.
@router.post("/v1/images/edits", include_in_schema=False)
async def edits() -> Response:
    raise _image_to_image("/v1/images/edits")


@router.post("/v1/images/variations", include_in_schema=False)
async def variations() -> Response:
    raise _image_to_image("/v1/images/variations")
