"""The upstream's error bodies: what the simulator says when it refuses a call."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

_STATUS_ERRORS: dict[int, tuple[str, str, str]] = {
    # status: (message, type, code), as the upstream words them where its docs show them.
    400: ("The request is invalid.", "invalid_request_error", "InvalidParameter"),
    401: ("Invalid API key", "invalid_request_error", "invalid_api_key"),
    402: ("Insufficient balance", "insufficient_quota", "insufficient_balance"),
    403: ("Access denied", "invalid_request_error", "access_denied"),
    429: ("Rate limit exceeded", "rate_limit_error", "rate_limit_exceeded"),
    500: ("internal error", "server_error", "internal_error"),
    502: ("bad gateway", "server_error", "bad_gateway"),
    503: ("service unavailable", "server_error", "service_unavailable"),
}

_CODE_MESSAGES: dict[str, str] = {
    "OutputImageSensitiveContentDetected": "The request failed because the output image may "
    "contain sensitive information.",
    "OutputImageRiskDetection": "The request failed because the output image may contain risky content.",
    "ContentSecurityDetectionError": "The request failed because content security detection flagged it.",
}


class InvalidRequest(ValueError):
    """A request the upstream would answer with 400; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def code_message(code: str, fallback: str) -> str:
    """The upstream's wording for a known error code, else ``fallback``."""
    return _CODE_MESSAGES.get(code, fallback)


def error_envelope(status: int, code: str | None = None) -> dict[str, Any]:
    """The upstream's error body for ``status``, optionally with a specific ``code``."""
    default = _STATUS_ERRORS.get(status)
    if default is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        try:
            reason = HTTPStatus(status).phrase.lower()
        except ValueError:  # a status with no registered name, e.g. 599
            reason = "upstream error"
        default = (reason, kind, re.sub(r"[^a-z0-9]+", "_", reason))
    message, kind, default_code = default
    error: dict[str, Any] = {
        "message": code_message(code or "", message),
        "type": kind,
    }
    if status == 400:
        # The upstream's 400s name the offending parameter; a forced one has none.
        error["param"] = None
    error["code"] = code or default_code
    return {"error": error}


def invalid_envelope(message: str, param: str | None) -> dict[str, Any]:
    """The upstream's 400 body for a request it will not run, naming the offending field."""
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": "InvalidParameter",
        }
    }
