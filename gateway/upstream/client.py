"""The one upstream client: pooled connections, explicit timeouts, and error mapping.

httpx is the API (``httpx.Request`` in, ``httpx.Response`` out, for this module and
gateway/call/stream.py and relay.py); the transport under it is chosen by measurement (the
README's Performance) with ``GATEWAY_UPSTREAM_TRANSPORT`` (gateway/upstream/transports.py, which
also classifies their errors):

- ``h1`` (the default): gateway/http1, HTTP/1.1 over asyncio protocols and httptools. At 32
  connections it did 1.29x the throughput of ``aiohttp`` in the same run, with 19% less CPU per
  request; it also bounds what a large answer buffers (reading pauses past 256 KB unread).
- ``aiohttp``: httpx-aiohttp's transport over aiohttp's connector (the default before h1).
- ``httpx``: httpx's own pool, several times slower under concurrency here.

Every wait is bounded by the callers: ``asyncio.timeout_at`` of the call's deadline here, the
stream relay's idle timeout in gateway/call/stream.py (h1 has no read timeout of its own; the
others' equal the total timeout, so they never fire first); the transport applies only the
connect timeout. None of them retries: a POST that may have reached the upstream is never sent
twice.

Every failure is turned into a :class:`GatewayError` whose status the OpenAI SDKs map correctly,
with ``x-should-retry`` saying whether a retry can help. Upstream 401/402 become 502s: they mean
the gateway's master key or account is broken, which must not look like the caller's key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from gateway import __version__
from gateway.core.errors import GatewayError
from gateway.upstream import descriptors
from gateway.upstream.transports import (
    DEFAULT_TRANSPORT,
    HTTP_ERRORS,
    TransportErrors,
    choose,
    is_dropped,
    unreadable_answer,
)

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


# An answer up to this size is read whole and answered with the cost headers; a larger 200 is
# streamed to the caller as it arrives. 1 MiB holds any URL answer (15 signed URLs are ~10 KB)
# and a 1K base64 image, while 2,000 calls in flight x ~3 copies stays within a few GB only in
# the worst case of all of them being just under it.
BUFFERED_ANSWER_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024  # the largest piece of an answer read at once (and per connection)


@dataclass(frozen=True)
class UpstreamReply:
    """An answer from the upstream (any status), body unparsed.

    ``body`` is all of it, unless ``rest`` is set: then a 200 was larger than
    :data:`BUFFERED_ANSWER_BYTES`, ``body`` is its beginning and ``rest`` reads the remainder.
    """

    status: int
    body: bytes
    headers: httpx.Headers
    latency_s: float
    rest: UpstreamBody | None = None


class BodyFailure(Exception):
    """The remainder of a streamed answer could not be read whole: ``reason`` is the outcome."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "too_large" or "bad_response" (dropped, timed out)


class UpstreamBody:
    """The rest of a large 200 answer, chunk by chunk, within the size cap and the call's deadline.

    Nothing is kept: each chunk is handed on and forgotten, which is what bounds memory.
    """

    def __init__(
        self,
        response: httpx.Response,
        chunks: AsyncIterator[bytes],
        received: int,
        limit: int,
        deadline: float,
        errors: TransportErrors = HTTP_ERRORS,
    ) -> None:
        self._response, self._chunks = response, chunks
        self.received, self._limit, self._deadline = received, limit, deadline
        self._errors: TransportErrors = (TimeoutError, httpx.HTTPError, *errors)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raise :class:`BodyFailure` past the cap, on a dropped connection or at the deadline."""
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    chunk = await anext(self._chunks)
            except StopAsyncIteration:
                return
            except self._errors:
                raise BodyFailure("bad_response") from None
            self.received += len(chunk)
            if self.received > self._limit:
                raise BodyFailure("too_large")
            yield chunk

    async def aclose(self) -> None:
        """Give the connection back, or drop it if the answer was not read to its end."""
        try:
            await self._response.aclose()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone anyway
            pass


class UpstreamFailure(Exception):
    """No answer at all: timeout or connection failure. ``reason`` is the metric label."""

    def __init__(self, reason: str, error: GatewayError, latency_s: float, reconcile: bool = False) -> None:
        super().__init__(error.message)
        self.reason = reason
        self.error = error
        self.latency_s = latency_s
        self.reconcile = reconcile  # the upstream got the call and may have billed it


class UpstreamClient:
    """Forwards image calls to the upstream with the master key, and nothing of the caller's."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout_s: float,
        connect_timeout_s: float = 5.0,
        max_connections: int = 2000,
        transport: str = DEFAULT_TRANSPORT,
        max_response_bytes: int = 1536 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._api_key = api_key
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"image-gateway/{__version__}",
        }
        self._transport, self._errors = choose(transport, max_connections, READ_CHUNK_BYTES)
        self._client = httpx.AsyncClient(transport=self._transport)  # owns the transport's lifetime
        # Requests go to the transport straight, built once here: the client's layers (merging
        # URL, headers, cookies and timeouts per call, auth, redirects, a cookie jar fed by every
        # answer and replayed on every later call) were ~15% of a worker's CPU in the profile and
        # do nothing this client needs. The headers are the ones the client sent: its defaults
        # (accept-encoding, connection) overridden by ours.
        self._url = httpx.URL(url)
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s).as_dict()
        self._post_headers = self._merged({})
        self._stream_headers = self._merged({"accept": "text/event-stream", "accept-encoding": "identity"})

    def _merged(self, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
        headers = httpx.Headers(self._client.headers)
        headers.update({**self._headers, **extra})
        return [(b"Host", self._url.netloc), *headers.raw]  # where httpx would put it: first

    def _request(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Request:
        """The request httpx builds from ``content=body``, built for a quarter of its CPU: with
        ``stream=`` httpx adds no header of its own, so Host (in ``headers``) and Content-Length
        come from here, and it does not normalise every header twice (~40 us a call)."""
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        extensions = {"timeout": self._timeout}
        request = httpx.Request(
            "POST", self._url, headers=headers, stream=httpx.ByteStream(body), extensions=extensions
        )
        request.read()  # as content= does: request.content is the body, for every transport
        return request

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(self, body: bytes) -> UpstreamReply:
        """POST the caller's body unchanged; raise :class:`UpstreamFailure` if no answer came.

        The answer is read in chunks, never past :attr:`max_response_bytes` (a declared
        Content-Length over it is refused before reading). A 200 larger than
        :data:`BUFFERED_ANSWER_BYTES` comes back with ``rest`` to stream; the caller must
        ``aclose`` it. Other statuses keep only their first MiB: an error envelope is small.
        """
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                request = self._request(body, self._post_headers)
                response = await self._send(request)
                try:
                    return await self._read(response, started, deadline)
                except BaseException:
                    await response.aclose()
                    raise
        except (TimeoutError, httpx.TimeoutException) as exc:
            if is_dropped(exc):
                raise self._dropped(started) from None
            raise UpstreamFailure("timeout", _timeout_error(self.timeout_s), _since(started)) from None
        except self._errors as exc:
            if unreadable_answer(exc):  # it answered, in a way we cannot read: it may bill
                raise UpstreamFailure("bad_response", bad_response_error(), _since(started), True) from None
            raise self._dropped(started) from None

    async def _read(self, response: httpx.Response, started: float, deadline: float) -> UpstreamReply:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            raise UpstreamFailure("too_large", too_large_error(self.max_response_bytes), _since(started))
        chunks = response.aiter_bytes().__aiter__()
        head, size = bytearray(), 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_response_bytes:
                raise UpstreamFailure("too_large", too_large_error(self.max_response_bytes), _since(started))
            head += chunk
            if len(head) > BUFFERED_ANSWER_BYTES:
                if response.status_code != 200:
                    break  # an error body this long is not an envelope worth reading further
                rest = UpstreamBody(response, chunks, size, self.max_response_bytes, deadline, self._errors)
                return UpstreamReply(200, bytes(head), response.headers, _since(started), rest)
        await response.aclose()
        return UpstreamReply(response.status_code, bytes(head), response.headers, _since(started))

    # -- "stream": true (the relay is gateway/call/stream.py) ------------------------------------

    async def open_stream(self, body: bytes, headers_timeout_s: float) -> httpx.Response:
        """POST the caller's body and return once the upstream's status and headers are in, the
        body still unread (the caller closes it); :class:`UpstreamFailure` if they did not come."""
        started = time.perf_counter()
        request = self._request(body, self._stream_headers)
        try:
            async with asyncio.timeout(headers_timeout_s):
                return await self._send(request)
        except (TimeoutError, httpx.TimeoutException) as exc:
            if is_dropped(exc):
                raise self._dropped(started) from None
            raise UpstreamFailure("timeout", _timeout_error(headers_timeout_s), _since(started)) from None
        except self._errors:
            raise self._dropped(started) from None

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send; with no file descriptor left to connect with, wait for one (nothing was sent,
        so trying again is safe; gateway/upstream/descriptors.py). The caller's deadline bounds the wait."""
        backoff = descriptors.Backoff()
        while True:
            try:
                return await self._transport.handle_async_request(request)
            except self._errors as exc:
                if not descriptors.exhausted(exc):
                    raise
            await backoff.wait()

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

    @property
    def secret(self) -> bytes:
        """The master key as bytes, for masking a streamed answer (gateway/call/relay.py)."""
        return self._api_key.encode()

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
