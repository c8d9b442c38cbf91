"""The OpenAI error envelope, and the statuses the official SDKs map to the right exception.

Every error leaving the gateway, its own or a mapped upstream one, is built here, so that the body
shape, the ``x-should-retry`` hint and ``retry-after`` are decided in exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from pydantic import BaseModel
from starlette.responses import Response


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The OpenAI error envelope, as documented in /docs."""

    error: ErrorBody


@dataclass(eq=False)
class GatewayError(Exception):
    """An error answer: status, OpenAI envelope fields and the retry hint for the SDKs.

    ``retry`` is sent as ``x-should-retry`` when not None: the SDKs otherwise retry every 429 and
    5xx twice, which for a spent budget or a refused prompt only triples the noise (and, after
    the upstream billed us, the cost). ``reason`` is the bounded label for the rejection metrics.
    """

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry: bool | None = None
    retry_after_s: int | None = None
    reason: str = "other"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def response(self) -> Response:
        """The error as the HTTP answer the caller gets."""
        return Response(self.body(), self.status, self.response_headers(), media_type="application/json")

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry is not None:
            headers["x-should-retry"] = "true" if self.retry else "false"
        if self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, self.retry_after_s))
            headers["retry-after-ms"] = str(max(1, self.retry_after_s) * 1000)
        return headers


def counted(count: int, noun: str) -> str:
    """``1 request``, ``2 requests``: a number and its noun, in the plural unless it is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param, False, reason="bad_request")


def unauthorized(message: str, code: str = "invalid_api_key", reason: str = "invalid_key") -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", code, None, False, reason=reason)


def model_not_found(model: str, usable: Sequence[str] | None = None) -> GatewayError:
    """``usable``: the models the caller's key may use, named so the caller can pick one."""
    hint = ""
    if usable is not None:
        names = ", ".join(f"'{m}'" for m in usable)
        hint = f" This key may use: {names}." if usable else " This key may use no model served now."
    return GatewayError(
        404,
        f"The model '{model}' does not exist or is not served by this gateway.{hint}",
        "invalid_request_error",
        "model_not_found",
        "model",
        False,
        reason="model_not_found",
    )


def model_not_allowed(model: str) -> GatewayError:
    return GatewayError(
        403,
        f"This key is not allowed to use the model '{model}'.",
        "invalid_request_error",
        "model_not_allowed",
        "model",
        False,
        reason="model_not_allowed",
    )


def payload_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than {limit} bytes.",
        "invalid_request_error",
        "request_too_large",
        None,
        False,
        reason="bad_request",
    )


def unsupported_media_type() -> GatewayError:
    return GatewayError(
        415,
        "The request body must be JSON (Content-Type: application/json).",
        "invalid_request_error",
        "unsupported_media_type",
        None,
        False,
        reason="bad_request",
    )


def insufficient_quota(message: str, reason: str) -> GatewayError:
    return GatewayError(429, message, "insufficient_quota", "insufficient_quota", None, False, reason=reason)


def rate_limited(message: str, retry_after_s: int, reason: str = "rate_limited") -> GatewayError:
    return GatewayError(
        429, message, "rate_limit_exceeded", "rate_limit_exceeded", None, True, retry_after_s, reason
    )


def redis_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "The gateway's key and budget store is unavailable; try again shortly.",
        "server_error",
        "service_unavailable",
        None,
        True,
        2,
        reason="redis_unavailable",
    )


def internal_error(upstream_called: bool = False) -> GatewayError:
    """A fault of the gateway's own. Once the upstream may have made (and billed) the images, a
    retry could be billed again: the SDKs are told not to retry, and the caller why."""
    if upstream_called:
        return GatewayError(
            500,
            "The gateway failed unexpectedly after the upstream answered: the images may already have "
            "been made and billed, so retrying could be charged again. The call is recorded for "
            "reconciliation.",
            "server_error",
            "internal_error",
            retry=False,
            reason="internal",
        )
    return GatewayError(
        500,
        "The gateway failed unexpectedly.",
        "server_error",
        "internal_error",
        retry=True,
        reason="internal",
    )


def not_found(message: str = "Not found.") -> GatewayError:
    return GatewayError(404, message, "invalid_request_error", "not_found", None, False, reason="not_found")


def overloaded(limit: int) -> GatewayError:
    return GatewayError(
        503,
        f"The gateway is at its limit of {counted(limit, 'request')} in flight; try again shortly.",
        "server_error",
        "overloaded",
        None,
        True,
        1,
        reason="overloaded",
    )


def body_timeout(limit_s: float) -> GatewayError:
    """The body did not arrive within GATEWAY_BODY_TIMEOUT_S; the connection is closed after it."""
    return GatewayError(
        408,
        f"The request body did not arrive within {limit_s:g} seconds.",
        "invalid_request_error",
        "request_timeout",
        None,
        True,
        reason="body_timeout",
        headers={"connection": "close"},
    )


def client_closed() -> GatewayError:
    """The caller hung up before its body was read: nobody reads this answer (nginx's 499)."""
    return GatewayError(
        499,
        "The client closed the connection before sending its whole body.",
        "invalid_request_error",
        "client_closed",
        None,
        False,
        reason="client_closed",
        headers={"connection": "close"},
    )


def too_many_pending(limit: int) -> GatewayError:
    """One client address already has ``limit`` calls not yet authenticated (body still coming)."""
    return GatewayError(
        429,
        f"This client address already has {limit} requests whose body or key check is not "
        "finished; wait for them to complete.",
        "rate_limit_error",
        "rate_limit_exceeded",
        None,
        True,
        1,
        reason="too_many_pending",
        headers={"connection": "close"},
    )
