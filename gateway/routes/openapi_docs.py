"""The error answers every route shares, written into the OpenAPI schema once.

FastAPI documents a request-validation failure as a 422 with its own body; the gateway answers 400
with the OpenAI envelope (see ``app._install_error_handlers``). And the answers that come from
shared code rather than from a route (the admin token check, an unknown id, Redis being down) are
not declared route by route. Without this the schema promised what the gateway does not do, which
schemathesis (tests/test_schemathesis.py) reports as undocumented status codes.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

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


# Swagger UI's files ship in the fastapi-offline package; the gateway serves them, so /docs works
# on a machine with no internet access (FastAPI's own page loads them from a CDN). ReDoc is not
# served: its page loads a logo from its CDN whatever it is given.
DOCS_ASSETS = resources.files("fastapi_offline").joinpath("static")
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
ASSETS_PATH = "/docs/assets"


def serve_docs_offline(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) with every file it loads served from here."""
    schema_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=schema_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        entry = DOCS_ASSETS.joinpath(name)
        suffix = name[name.rfind(".") :]
        if "/" in name or name.startswith(".") or suffix not in ASSET_TYPES or not entry.is_file():
            return Response(status_code=404)
        headers = {"cache-control": "public, max-age=86400"}
        return Response(entry.read_bytes(), media_type=ASSET_TYPES[suffix], headers=headers)
