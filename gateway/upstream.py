"""The one upstream client: pooled connections, explicit timeouts, and error mapping.

httpx is the API; the transport under it is chosen by measurement (see the README's benchmark):
httpx's own pool ran several times slower under concurrency on this kind of machine than httpx
over aiohttp's connector, so aiohttp is the default and ``GATEWAY_UPSTREAM_TRANSPORT=httpx``
switches back.

Every failure is turned into a :class:`GatewayError` whose status the OpenAI SDKs map correctly,
with ``x-should-retry`` saying whether a retry can help. Upstream 401/402 become 502s: they mean
the gateway's master key or account is broken, which must not look like the caller's key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import orjson

from gateway import __version__
from gateway.errors import GatewayError

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


@dataclass(frozen=True)
class UpstreamReply:
    """A complete answer from the upstream (any status), body unparsed."""

    status: int
    body: bytes
    headers: httpx.Headers
    latency_s: float


class UpstreamFailure(Exception):
    """No answer at all: timeout or connection failure. ``reason`` is the metric label."""

    def __init__(self, reason: str, error: GatewayError, latency_s: float, reconcile: bool = False) -> None:
        super().__init__(error.message)
        self.reason = reason
        self.error = error
        self.latency_s = latency_s
        self.reconcile = reconcile  # the upstream got the call and may have billed it


def _transport(kind: str, max_connections: int) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=30)
        # auto_decompress off: the body goes back to the caller byte for byte.
        return aiohttp.ClientSession(connector=connector, auto_decompress=False)

    return AiohttpTransport(client=session)


class UpstreamClient:
    """Forwards image calls to the upstream with the master key, and nothing of the caller's."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout_s: float,
        connect_timeout_s: float = 5.0,
        max_connections: int = 2000,
        transport: str = "aiohttp",
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"image-gateway/{__version__}",
        }
        self._client = httpx.AsyncClient(
            transport=_transport(transport, max_connections),
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(self, body: bytes) -> UpstreamReply:
        """POST the caller's body unchanged; raise :class:`UpstreamFailure` if no answer came."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.post(self.url, content=body, headers=self._headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            if _is_dropped(exc):
                raise self._dropped(started) from None
            raise UpstreamFailure("timeout", _timeout_error(self.timeout_s), _since(started)) from None
        except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
            if _unreadable_answer(exc):  # it answered, in a way we cannot read: it may bill
                raise UpstreamFailure("bad_response", bad_response_error(), _since(started), True) from None
            raise self._dropped(started) from None
        return UpstreamReply(response.status_code, response.content, response.headers, _since(started))

    def _dropped(self, started: float) -> UpstreamFailure:
        error = GatewayError(
            502,
            "The image service could not be reached or dropped the connection; try again.",
            "server_error",
            "upstream_unavailable",
            retry=True,
            retry_after_s=1,
            reason="upstream_error",
        )
        return UpstreamFailure("connect", error, _since(started))

    def redact(self, text: str) -> str:
        """Remove the master key from text that came from the upstream, just in case it echoes."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def redact_bytes(self, body: bytes) -> bytes:
        """The same for a body relayed as it came: one scan, a copy only if the key is in it."""
        if not self._api_key:
            return body
        secret = self._api_key.encode()
        return body.replace(secret, b"***") if secret in body else body


def _since(started: float) -> float:
    return time.perf_counter() - started


def _is_dropped(exc: BaseException) -> bool:
    """httpx-aiohttp reports a dropped connection as ConnectTimeout; it is not a timeout."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
        cause, aiohttp.ServerTimeoutError
    )


def _unreadable_answer(exc: BaseException) -> bool:
    """An answer aiohttp could not parse (a header over its 8 KB limit, a malformed status line):
    the upstream got the call, so it is a bad response to reconcile, not a connection failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.http_exceptions.HttpProcessingError | aiohttp.ClientResponseError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _timeout_error(timeout_s: float) -> GatewayError:
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
    # Every field the caller may see is masked: an upstream that echoes our Authorization header
    # must not hand the master key to a team, whichever field it puts it in.
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
        retry_after = _retry_after(reply.headers)
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


def _retry_after(headers: httpx.Headers) -> int:
    try:
        return max(1, min(60, int(float(headers.get("retry-after", "5")))))
    except ValueError:
        return 5


def bad_response_error() -> GatewayError:
    return GatewayError(
        502,
        "The image service answered with a body the gateway could not read. You were not "
        "charged; the call is recorded for reconciliation.",
        "server_error",
        "upstream_bad_response",
        retry=False,
    )
