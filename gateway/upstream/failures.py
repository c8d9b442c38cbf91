"""What a failed upstream call means to its caller: the error it reads, and the metric's reason.

Every failure is a :class:`GatewayError` whose status the OpenAI SDKs map correctly, with
``x-should-retry`` saying whether a retry can help. Upstream 401/402 become 502s: they mean the
gateway's master key or account is broken, which must not look like the caller's key. Every field
of an upstream's error the caller may see is masked first: an upstream that echoes our
Authorization header must not hand the master key to a team.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.core.errors import GatewayError
from gateway.upstream.reply import UpstreamReply

CONTENT_SAFETY_CODES = frozenset(
    {
        "InvalidParameter.SensitiveContent",
        "OutputImageSensitiveContentDetected",
        "InputImageSensitiveContentDetected",
        "InputTextSensitiveContentDetected",
        "OutputImageRiskDetection",
        "ContentSecurityDetectionError",
        "content_policy_violation",
    }
)


class UpstreamFailure(Exception):
    """No answer that can be used: timeout, connection failure, or a body that could not be read
    whole. ``reason`` is the metric label; ``status`` the upstream's status if one arrived.

    ``sent``: the request may have reached the upstream (False only when the connection failed
    before it was written: refused, unreachable, TLS refused, connect timeout): another channel
    may then be tried (gateway/upstream/routing.py), the upstream cannot have made an image."""

    def __init__(
        self,
        reason: str,
        error: GatewayError,
        latency_s: float,
        reconcile: bool = False,
        status: int | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(error.message)
        self.reason = reason
        self.error = error
        self.latency_s = latency_s
        self.reconcile = reconcile  # the upstream got the call and may have billed it
        self.status = status
        self.sent = sent


def unavailable_error() -> GatewayError:
    return GatewayError(
        502,
        "The image service could not be reached or dropped the connection; try again.",
        "server_error",
        "upstream_unavailable",
        retry=True,
        retry_after_s=1,
        reason="upstream_error",
    )


def timeout_error(timeout_s: float) -> GatewayError:
    return GatewayError(
        504,
        f"The image service did not answer within {timeout_s:g} s.",
        "server_error",
        "upstream_timeout",
        retry=True,
        retry_after_s=1,
        reason="upstream_error",
    )


def _upstream_error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, code, param) from an upstream error envelope, if it is one."""
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None, None, None

    def text(name: str) -> str | None:
        value = error.get(name)
        return None if value is None else str(value)[:1000]

    return text("message"), text("code"), text("param")


def map_error_reply(reply: UpstreamReply, redact: Callable[[str], str] = str) -> tuple[str, GatewayError]:
    """Turn a non-200 upstream answer into (metric reason, caller-facing error)."""
    status = reply.status
    message, code, param = (None if f is None else redact(f) for f in _upstream_error_fields(reply.body))
    if status in (401, 403):
        return "auth", GatewayError(
            502,
            "The image service refused the gateway's own credentials. This is a gateway "
            "configuration problem, not your key; the operators have been alerted.",
            "server_error",
            "upstream_auth_failed",
            retry=False,
        )
    if status == 402:
        return "insufficient_balance", GatewayError(
            502,
            "The gateway's account at the image service has insufficient balance. This is not "
            "your key's budget; the operators have been alerted.",
            "server_error",
            "upstream_insufficient_balance",
            retry=False,
        )
    if status == 429:
        retry_after = _retry_after(reply.header(b"retry-after") or "5")
        return "rate_limited", GatewayError(
            429,
            "The image service is rate limiting the gateway; try again shortly.",
            "rate_limit_exceeded",
            "rate_limit_exceeded",
            retry=True,
            retry_after_s=retry_after,
        )
    if status >= 500:
        return "5xx", GatewayError(
            502,
            f"The image service failed with status {status}; try again.",
            "server_error",
            "upstream_error",
            retry=True,
            retry_after_s=1,
        )
    if code in CONTENT_SAFETY_CODES:
        return "content_safety", GatewayError(
            400,
            message or "The image service refused the prompt or image for content safety.",
            "invalid_request_error",
            code,
            param,
            retry=False,
        )
    if status in (400, 404, 409, 413, 422):
        return "4xx", GatewayError(
            400 if status == 404 else status,
            message or f"The image service refused the request (status {status}).",
            "invalid_request_error",
            code,
            param,
            retry=False,
        )
    return "4xx", GatewayError(
        502,
        f"The image service answered with unexpected status {status}.",
        "server_error",
        "upstream_error",
        retry=False,
    )


def _retry_after(value: str) -> int:
    """The upstream's wait in whole seconds, kept within 1..60; 5 when it is not a number of
    seconds (an HTTP date, garbage). Clamped as a float: an infinite one has no integer."""
    try:
        return int(min(60.0, max(1.0, float(value))))
    except ValueError:
        return 5


def too_large_error(limit: int) -> GatewayError:
    return GatewayError(
        502,
        f"The image service's answer was larger than the gateway accepts ({limit:,} bytes). You "
        "were not charged; the call is recorded for reconciliation.",
        "server_error",
        "upstream_response_too_large",
        retry=False,
    )


def bad_response_error() -> GatewayError:
    return GatewayError(
        502,
        "The image service answered with a body the gateway could not read. You were not "
        "charged; the call is recorded for reconciliation.",
        "server_error",
        "upstream_bad_response",
        retry=False,
    )
