"""Validate bodies against OpenAI's *published* OpenAPI schemas (not against what the SDK tolerates).

The schemas live, copied verbatim, in ``tests/data/openai_openapi_subset.yaml`` (source repository,
path and commit are in its header). This module is a helper for tests, not a test file:

    from openai_schema import validate_images_response
    validate_images_response(response.json())   # raises jsonschema.ValidationError on mismatch

How the subset is turned into something ``jsonschema`` can check:

* ``$ref``s (``#/components/schemas/...``) are resolved inside the subset document itself, through a
  ``referencing`` registry; a ``$ref`` to anything the subset does not contain is an error.
* The subset is OpenAPI 3.1, i.e. already JSON Schema 2020-12, and is used as is. Should it ever be
  refreshed from an OpenAPI 3.0 document, 3.0's ``nullable: true`` (which ``jsonschema`` ignores) is
  rewritten into JSON Schema: ``"null"`` is added to ``type`` (and ``None`` to ``enum``), or, when
  the node has no ``type`` (``$ref``, ``anyOf``/``oneOf``/``allOf``), it is wrapped as
  ``anyOf: [<node>, {type: "null"}]``. ``nullable: false`` is dropped.
* ``format`` is asserted for ``uri`` (the only standard format in the subset, on ``Image.url``):
  a relative URL is not a ``uri``. OpenAI's own ``format: unixtime`` is not a JSON Schema format
  and stays an annotation; ``type: integer`` already constrains those fields.

Nothing is tightened beyond the published text: in particular the schemas do not set
``additionalProperties: false``, so extra fields are allowed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SUBSET_PATH = Path(__file__).resolve().parent / "data" / "openai_openapi_subset.yaml"
_BASE_URI = "urn:openai-openapi-subset"
_SCHEMA_PREFIX = "#/components/schemas/"

# Keys whose values are data (examples, defaults, enum members), never schemas: not rewritten.
_DATA_KEYS = frozenset({"example", "examples", "default", "enum", "const"})

__all__ = [
    "SUBSET_PATH",
    "load_subset",
    "openapi_to_json_schema",
    "schema_names",
    "iter_refs",
    "validator_for",
    "validate_component",
    "validate_images_response",
    "validate_error_response",
    "validate_models_list",
]


def openapi_to_json_schema(node: Any) -> Any:
    """Return a copy of an OpenAPI 3.0 schema tree with ``nullable`` rewritten as JSON Schema."""
    if isinstance(node, list):
        return [openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "nullable":
            continue
        if key in _DATA_KEYS or key.startswith("x-"):
            out[key] = copy.deepcopy(value)
        else:
            out[key] = openapi_to_json_schema(value)

    if node.get("nullable") is not True:
        return out

    if "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in types:
            types = [*types, "null"]
        out["type"] = types
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out

    # No `type` to extend ($ref, anyOf/oneOf/allOf, or an untyped node): allow null alongside it.
    return {"anyOf": [out, {"type": "null"}]}


@lru_cache(maxsize=1)
def load_subset() -> dict[str, Any]:
    """The subset document, as JSON Schema 2020-12 (``nullable`` rewritten if it is OpenAPI 3.0)."""
    with SUBSET_PATH.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    version = str(doc.get("openapi", ""))
    if not version.startswith(("3.0", "3.1")):
        raise ValueError(f"{SUBSET_PATH}: unsupported or missing `openapi` version {version!r}")
    schemas = doc.get("components", {}).get("schemas")
    if not isinstance(schemas, dict) or not schemas:
        raise ValueError(f"{SUBSET_PATH}: no components.schemas")
    if version.startswith("3.0"):
        doc = {**doc, "components": {**doc["components"], "schemas": openapi_to_json_schema(schemas)}}
    return doc


def schema_names() -> list[str]:
    return list(load_subset()["components"]["schemas"])


def iter_refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` value in a schema tree (data keys such as examples are skipped)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            elif key not in _DATA_KEYS and not key.startswith("x-"):
                yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s]*$")


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    if "uri" not in checker.checkers:
        # jsonschema only checks `uri` when rfc3987 is installed; fall back to RFC 3986's rule that
        # a URI (as opposed to a URI-reference) starts with a scheme and holds no whitespace.
        @checker.checks("uri")
        def _is_uri(instance: object) -> bool:
            if not isinstance(instance, str):
                return True
            return bool(_URI_SCHEME.match(instance))

    return checker


@lru_cache(maxsize=1)
def _registry() -> Registry:
    resource = Resource.from_contents(load_subset(), default_specification=DRAFT202012)
    return Registry().with_resource(_BASE_URI, resource)


@cache
def validator_for(name: str) -> Draft202012Validator:
    """A 2020-12 validator for ``components.schemas[name]``, ``$ref``s resolved inside the subset."""
    if name not in load_subset()["components"]["schemas"]:
        raise KeyError(f"{name!r} is not in {SUBSET_PATH.name}; have {schema_names()}")
    return Draft202012Validator(
        {"$ref": f"{_BASE_URI}{_SCHEMA_PREFIX}{name}"},
        registry=_registry(),
        format_checker=_format_checker(),
    )


def validate_component(name: str, body: Any) -> None:
    """Raise ``jsonschema.ValidationError`` (the most relevant one) unless ``body`` matches."""
    validator = validator_for(name)
    error = best_match(validator.iter_errors(body))
    if error is not None:
        raise error


def validate_images_response(body: dict) -> None:
    """``POST /images/generations`` 200 body -> ``ImagesResponse``."""
    validate_component("ImagesResponse", body)


def validate_error_response(body: dict) -> None:
    """Error body -> ``ErrorResponse`` (``{"error": Error}``)."""
    validate_component("ErrorResponse", body)


def validate_models_list(body: dict) -> None:
    """``GET /models`` 200 body -> ``ListModelsResponse``."""
    validate_component("ListModelsResponse", body)
