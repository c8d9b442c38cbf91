"""The OpenAPI-subset helper (tests/openai_schema.py) accepts real bodies and rejects broken ones.

These tests only exercise the helper and the copied schemas; they prove the checks are not vacuous
before gateway tests rely on them.
"""

from __future__ import annotations

import copy
import json

import pytest
from jsonschema import Draft202012Validator, ValidationError

from tests.openai_schema import (
    iter_refs,
    load_subset,
    openapi_to_json_schema,
    schema_names,
    validate_component,
    validate_error_response,
    validate_images_response,
    validate_models_list,
)

IMAGES_URL = {"created": 1730000000, "data": [{"url": "https://x/y.png"}]}
IMAGES_B64_FULL = {
    "created": 1713833628,
    "data": [{"b64_json": "iVBORw0KGgo=", "revised_prompt": "a cat"}],
    "background": "opaque",
    "output_format": "png",
    "size": "1024x1024",
    "quality": "high",
    "usage": {
        "total_tokens": 100,
        "input_tokens": 50,
        "output_tokens": 50,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
        "output_tokens_details": {"image_tokens": 50, "text_tokens": 0},
    },
}
ERROR = {"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "created": 1, "owned_by": "o"}]}


def _with(body: dict, path: tuple, value=...) -> dict:
    """A deep copy of ``body`` with the item at ``path`` replaced (or deleted when value is omitted)."""
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


# --- the subset document itself -------------------------------------------------------------------


def test_subset_has_the_components_the_gateway_needs():
    names = set(schema_names())
    assert {
        "ImagesResponse",
        "Image",
        "ImageGenUsage",
        "Error",
        "ErrorResponse",
        "ListModelsResponse",
        "Model",
    } <= names


def test_every_ref_resolves_inside_the_subset():
    doc = load_subset()
    schemas = doc["components"]["schemas"]
    refs = set(iter_refs(schemas))
    assert refs, "the subset should contain $refs (ImagesResponse -> Image, ...)"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, f"dangling {ref}"


@pytest.mark.parametrize("name", schema_names())
def test_each_component_is_a_valid_2020_12_schema(name):
    Draft202012Validator.check_schema(load_subset()["components"]["schemas"][name])


def test_the_specs_own_examples_validate():
    schemas = load_subset()["components"]["schemas"]
    validate_images_response(json.loads(schemas["ImagesResponse"]["x-oaiMeta"]["example"]))
    validate_component("Model", json.loads(schemas["Model"]["x-oaiMeta"]["example"]))


# --- accepted bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        IMAGES_URL,
        IMAGES_B64_FULL,
        {"created": 1730000000},  # `data` is optional in the published 3.1 schema
        {"created": 1730000000, "data": []},
        {"created": 1730000000, "data": [{"url": "data:image/png;base64,iVBORw0KGgo="}]},
        {"created": 1730000000, "data": [{}]},  # Image has no required field
    ],
)
def test_valid_images_responses(body):
    validate_images_response(body)


@pytest.mark.parametrize(
    "body",
    [
        ERROR,
        {"error": {"message": "m", "type": "invalid_request_error", "param": "size", "code": None}},
        {"error": {"message": "", "type": "server_error", "param": None, "code": None}},
    ],
)
def test_valid_error_responses(body):
    validate_error_response(body)


@pytest.mark.parametrize("body", [MODELS, {"object": "list", "data": []}])
def test_valid_models_lists(body):
    validate_models_list(body)


def test_extra_fields_are_allowed_everywhere():
    validate_images_response(
        {**IMAGES_URL, "model": "seedream", "data": [{"url": "https://x/y.png", "seed": 7}]}
    )
    validate_error_response({"error": {**ERROR["error"], "request_id": "r"}, "extra": 1})
    validate_models_list({**MODELS, "has_more": False, "data": [{**MODELS["data"][0], "permission": []}]})


# --- rejected bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_with(IMAGES_URL, ("created",)), id="missing-created"),
        pytest.param(_with(IMAGES_URL, ("created",), "1730000000"), id="created-string"),
        pytest.param(_with(IMAGES_URL, ("created",), 1730000000.5), id="created-fractional"),
        pytest.param(_with(IMAGES_URL, ("created",), True), id="created-bool"),
        pytest.param(_with(IMAGES_URL, ("created",), None), id="created-null"),
        pytest.param(_with(IMAGES_URL, ("data",), {"url": "https://x/y.png"}), id="data-not-array"),
        pytest.param(_with(IMAGES_URL, ("data",), None), id="data-null"),
        pytest.param(_with(IMAGES_URL, ("data", 0, "url"), 5), id="url-int"),
        pytest.param(_with(IMAGES_URL, ("data", 0, "url"), None), id="url-null"),
        pytest.param(_with(IMAGES_URL, ("data", 0, "url"), "/v1/files/y.png"), id="url-relative"),
        pytest.param(_with(IMAGES_URL, ("data", 0), {"b64_json": None}), id="b64-null"),
        pytest.param(_with(IMAGES_URL, ("data", 0, "revised_prompt"), None), id="revised-prompt-null"),
        pytest.param(_with(IMAGES_URL, ("data", 0), "https://x/y.png"), id="image-not-object"),
        pytest.param(_with(IMAGES_B64_FULL, ("size",), "512x512"), id="size-not-in-enum"),
        pytest.param(_with(IMAGES_B64_FULL, ("size",), "auto"), id="size-auto"),
        pytest.param(_with(IMAGES_B64_FULL, ("quality",), "standard"), id="quality-dalle"),
        pytest.param(_with(IMAGES_B64_FULL, ("background",), "auto"), id="background-auto"),
        pytest.param(_with(IMAGES_B64_FULL, ("output_format",), "gif"), id="output-format"),
        pytest.param(_with(IMAGES_B64_FULL, ("usage",), None), id="usage-null"),
        pytest.param(_with(IMAGES_B64_FULL, ("usage", "input_tokens_details")), id="usage-no-details"),
        pytest.param(_with(IMAGES_B64_FULL, ("usage", "total_tokens")), id="usage-no-total"),
        pytest.param(_with(IMAGES_B64_FULL, ("usage", "input_tokens"), "50"), id="usage-tokens-string"),
        pytest.param(
            _with(IMAGES_B64_FULL, ("usage", "input_tokens_details", "image_tokens")),
            id="usage-details-incomplete",
        ),
        pytest.param(
            _with(IMAGES_B64_FULL, ("usage", "output_tokens_details", "text_tokens")),
            id="usage-out-details-incomplete",
        ),
        pytest.param([IMAGES_URL], id="not-an-object"),
    ],
)
def test_broken_images_responses_are_rejected(body):
    with pytest.raises(ValidationError):
        validate_images_response(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_with(ERROR, ("error", "message")), id="missing-message"),
        pytest.param(_with(ERROR, ("error", "type")), id="missing-type"),
        pytest.param(_with(ERROR, ("error", "param")), id="param-omitted-instead-of-null"),
        pytest.param(_with(ERROR, ("error", "code")), id="code-omitted-instead-of-null"),
        pytest.param(_with(ERROR, ("error", "message"), None), id="message-null"),
        pytest.param(_with(ERROR, ("error", "type"), None), id="type-null"),
        pytest.param(_with(ERROR, ("error", "code"), 401), id="code-int"),
        pytest.param(_with(ERROR, ("error", "param"), ["size"]), id="param-list"),
        pytest.param(_with(ERROR, ("error",), "m"), id="error-string"),
        pytest.param(ERROR["error"], id="not-wrapped-in-error"),
        pytest.param({"detail": "Not Found"}, id="fastapi-default"),
    ],
)
def test_broken_error_responses_are_rejected(body):
    with pytest.raises(ValidationError):
        validate_error_response(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_with(MODELS, ("data", 0, "owned_by")), id="model-missing-owned-by"),
        pytest.param(_with(MODELS, ("data", 0, "created")), id="model-missing-created"),
        pytest.param(_with(MODELS, ("data", 0, "object")), id="model-missing-object"),
        pytest.param(_with(MODELS, ("data", 0, "id")), id="model-missing-id"),
        pytest.param(_with(MODELS, ("data", 0, "created"), "1"), id="model-created-string"),
        pytest.param(_with(MODELS, ("data", 0, "created"), None), id="model-created-null"),
        pytest.param(_with(MODELS, ("data", 0, "id"), 1), id="model-id-int"),
        pytest.param(_with(MODELS, ("data", 0, "owned_by"), None), id="model-owned-by-null"),
        pytest.param(_with(MODELS, ("data", 0, "object"), "models"), id="model-object-wrong"),
        pytest.param(_with(MODELS, ("object",), "List"), id="list-object-wrong"),
        pytest.param(_with(MODELS, ("object",)), id="list-missing-object"),
        pytest.param(_with(MODELS, ("data",)), id="list-missing-data"),
        pytest.param(_with(MODELS, ("data",), MODELS["data"][0]), id="data-not-array"),
    ],
)
def test_broken_models_lists_are_rejected(body):
    with pytest.raises(ValidationError):
        validate_models_list(body)


def test_errors_point_at_the_offending_field():
    with pytest.raises(ValidationError) as exc:
        validate_models_list(_with(MODELS, ("data", 0, "owned_by")))
    assert list(exc.value.absolute_path) == ["data", 0]
    assert "owned_by" in exc.value.message


# --- OpenAPI 3.0 `nullable` translation -----------------------------------------------------------

# `Error` exactly as published in the OpenAPI 3.0.0 openapi.yaml of openai/openai-openapi
# (commit 578000861507cd19620e3f1092adf62303757c0a), which spelled nullability with `nullable`.
LEGACY_ERROR_3_0 = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "nullable": True},
        "message": {"type": "string", "nullable": False},
        "param": {"type": "string", "nullable": True},
        "type": {"type": "string", "nullable": False},
    },
    "required": ["type", "message", "param", "code"],
}


def test_nullable_true_adds_null_to_the_type():
    schema = openapi_to_json_schema(LEGACY_ERROR_3_0)
    assert schema["properties"]["code"] == {"type": ["string", "null"]}
    assert schema["properties"]["message"] == {"type": "string"}
    validator = Draft202012Validator(schema)
    validator.validate(ERROR["error"])
    assert not validator.is_valid(_with(ERROR, ("error", "message"), None)["error"])
    assert not validator.is_valid(_with(ERROR, ("error", "param"))["error"])  # nullable != optional
    # Without the translation jsonschema would reject the null `param` a 3.0 spec allows.
    assert not Draft202012Validator(LEGACY_ERROR_3_0).is_valid(ERROR["error"])


def test_nullable_on_enum_and_on_ref():
    schema = openapi_to_json_schema(
        {
            "type": "object",
            "properties": {
                "fmt": {
                    "type": "string",
                    "enum": ["url", "b64_json"],
                    "nullable": True,
                    "example": {"nullable": True},
                },
                "file": {"$ref": "#/$defs/F", "nullable": True},
            },
            "$defs": {"F": {"type": "object", "required": ["id"]}},
        }
    )
    assert schema["properties"]["fmt"]["enum"] == ["url", "b64_json", None]
    assert schema["properties"]["fmt"]["example"] == {"nullable": True}  # data left untouched
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"fmt": None, "file": None})
    assert validator.is_valid({"fmt": "url", "file": {"id": "f"}})
    assert not validator.is_valid({"fmt": "png"})
    assert not validator.is_valid({"file": {}})
