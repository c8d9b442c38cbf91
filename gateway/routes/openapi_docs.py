"""The error answers every route shares, written into the OpenAPI schema once.

FastAPI documents a request-validation failure as a 422 with its own body; the gateway answers 400
with the OpenAI envelope (see ``app._install_error_handlers``). And the answers that come from
shared code rather than from a route (the admin token check, an unknown id, Redis being down) are
not declared route by route. Without this the schema promised what the gateway does not do, which
schemathesis (tests/test_schemathesis.py) reports as undocumented status codes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
UNUSED = ("HTTPValidationError", "ValidationError")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _shared_errors(path: str, operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The error answers of ``operation`` that no route declares itself."""
    errors: dict[str, dict[str, Any]] = {}
    if operation.get("parameters") or operation.get("requestBody"):
        errors["400"] = _error("Invalid request: a parameter or the body is malformed.")
    if path.startswith("/admin/"):
        errors["401"] = _error("Missing, wrong, revoked or expired admin token or credential.")
        errors["403"] = _error("The credential's role may not do this (the message names the role needed).")
        errors["503"] = _error("Redis is unavailable, or the admin API is disabled (no admin token).")
    elif path.startswith("/v1/"):
        errors["401"] = _error("Missing, unknown, revoked or expired key.")
        errors["503"] = _error("Redis unavailable.")
    if "{" in path:
        errors["404"] = _error("No such key or model.")
    return errors


def document_shared_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` document the answers the gateway really gives."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    responses = operation["responses"]
                    responses.pop("422", None)
                    for status, answer in _shared_errors(path, operation).items():
                        responses.setdefault(status, answer)
            if "/readyz" in schema["paths"]:
                schema["paths"]["/readyz"]["get"]["responses"].setdefault(
                    "503", {"description": "Not ready."}
                )
            for name in UNUSED:
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
