"""Step 4 with ``"stream": true``: relay the upstream's server-sent events, and count them.

Every check (key, body, model, limits, the reservation) has happened before this step; an
upstream refusal before its first event (its JSON 4xx/5xx) maps as without streaming, and moves
on to the next channel on the same terms (gateway/upstream/routing.py): never once a stream began. Once the
upstream streams, each event is passed on as it arrives, byte for byte (the master key masked,
should it ever appear), and parsed only to count: one charged image per
``image_generation.partial_succeeded``, nothing for ``partial_failed``, and the ``completed``
event's ``usage.generated_images`` kept beside the count.

Two coroutines, so that a caller who hangs up does not stop the upstream call it is billed for:

- the *reader*, a task of its own, reads the upstream stream to its end, counts, queues every
  event for the caller, settles exactly once when the upstream's stream ends (or breaks, or
  stalls), then ends the call (gateway/call/ending.py: the route releases what it held, observes);
- the *response* (:meth:`Relay.__call__`, the ASGI response) sends the queued events while the
  caller is there, and returns only once the reader has settled, so a SIGTERM drain waits for it.

Timeouts: ``GATEWAY_UPSTREAM_STREAM_IDLE_TIMEOUT_S`` bounds the wait for the headers and for each
piece of the stream (Seedream makes an image every few tens of seconds: a quiet stream longer than
that has stalled); ``GATEWAY_UPSTREAM_TIMEOUT_S`` still bounds the whole stream, since the
reservation lives that long. A stream that breaks or stalls ends with an ``event: error`` carrying
the OpenAI error envelope; the images delivered are charged and the record is flagged for
reconciliation.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.call.attempts import reach
from gateway.call.client import client_has_left
from gateway.call.ending import Relayed
from gateway.call.log import CallLog
from gateway.core.errors import GatewayError
from gateway.upstream.failures import bad_response_error
from gateway.upstream.reply import BodyFailure, UpstreamReply
from gateway.upstream.routing import Channel, Router

log = logging.getLogger("gateway")

SUCCEEDED = "image_generation.partial_succeeded"
FAILED = "image_generation.partial_failed"
COMPLETED = "image_generation.completed"
EVENT_END = re.compile(rb"\r?\n\r?\n")

Settle = Callable[[bool], Awaitable[None]]  # settle(reconcile): the route's settlement, once
RUNNING: set[asyncio.Task[None]] = set()  # readers whose caller may have left: keep them alive


async def open_relay(
    router: Router,
    body: bytes,
    call: CallLog,
    *,
    settle: Settle,
    headers: dict[str, str],
    idle_timeout_s: float,
    total_timeout_s: float,
    receive: Receive,
) -> EventRelay:
    """The caller's stream once a channel streams (gateway/call/attempts.py tries them in turn);
    else settle and raise the mapped error."""
    call.stream, started = True, time.perf_counter()

    async def send(channel: Channel, sent: bytes, deadline: float) -> UpstreamReply:
        nonlocal started
        started = time.perf_counter()
        return await channel.client.open_stream(sent, min(idle_timeout_s, total_timeout_s), deadline)

    reached = await reach(router, body, call, send)
    reply = reached.reply
    if reached.judgement is not None:
        await settle(reached.judgement.reconcile)
        raise reached.error
    assert reply is not None
    if not (reply.header(b"content-type") or "").startswith("text/event-stream"):
        await reply.aclose()  # a 200 that is not a stream: it may have made images unseen
        call.upstream_latency_s = time.perf_counter() - started
        call.upstream_outcome = "bad_response"
        await settle(True)
        raise bad_response_error()
    return EventRelay(
        reply,
        call,
        redact=reached.channel.client.redact_bytes,
        settle=settle,
        headers=headers,
        idle_timeout_s=idle_timeout_s,
        started=started,
        receive=receive,
    )


class EventRelay(Relayed):
    """The caller's ``text/event-stream`` response; its reader task starts at once."""

    media_type = "text/event-stream"

    def __init__(
        self,
        reply: UpstreamReply,
        call: CallLog,
        *,
        redact: Callable[[bytes], bytes],
        settle: Settle,
        headers: dict[str, str],
        idle_timeout_s: float,
        started: float,
        receive: Receive,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.init_headers({"cache-control": "no-cache", **headers})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.call, self.left = call, False
        self._upstream, self._redact, self._settle = reply, redact, settle
        self._idle_s, self._started = idle_timeout_s, started
        self._receive = receive
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(), name=f"stream-{call.request_id}")
        RUNNING.add(self._task)
        self._task.add_done_callback(RUNNING.discard)

    # -- the reader ----------------------------------------------------------------------------

    async def _read(self) -> None:
        call, failure, cancelled = self.call, None, False
        try:
            failure = await self._relay_upstream()
        except asyncio.CancelledError:  # the loop is closing: settle (or spool) all the same
            failure, cancelled = "stream_broken", True
        except Exception as exc:  # a fault of the gateway's own: settled all the same, then answered for
            failure = "stream_broken"
            self._failed(exc)
        finally:
            await self._upstream.aclose()
        try:
            call.upstream_latency_s = time.perf_counter() - self._started
            call.upstream_outcome = failure or "ok"
            if failure is not None:
                self._queue.put_nowait(error_event(failure))
            call.client_left = self.left or client_has_left(self._receive)
            disagrees = call.upstream_images is not None and call.upstream_images != call.images
            await self._settle(failure is not None or disagrees)
        except Exception as exc:  # the call's end releases what it still holds
            self._failed(exc)
        finally:
            self._queue.put_nowait(None)
            await self.ended(failure is None and not self.left)
        if cancelled:
            raise asyncio.CancelledError

    def _failed(self, exc: Exception) -> None:
        self.failure = self.failure or exc
        log.error("request %s failed in the gateway, relaying the stream", self.call.request_id, exc_info=exc)

    async def _relay_upstream(self) -> str | None:
        """Queue every event as it arrives; None if the stream ended whole, else what went wrong."""
        complete, pending = False, b""
        read, idle_s = self._upstream.read, self._idle_s
        try:
            while chunk := await read(idle_s):
                pending += chunk
                start = 0
                for end in EVENT_END.finditer(pending):
                    event = pending[start : end.end()]
                    start = end.end()
                    complete = count_event(event, self.call) or complete
                    self._queue.put_nowait(self._redact(event))
                pending = pending[start:]
        except BodyFailure as failure:  # dropped, cut short, stalled, past the deadline or the cap
            return STREAM_FAILURES.get(failure.reason, "stream_broken")
        if pending:
            complete = count_event(pending, self.call) or complete
            self._queue.put_nowait(self._redact(pending))
        return None if complete else "stream_broken"

    # -- the response --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await self._send(send, start)
        while (event := await self._queue.get()) is not None:
            if not self.left and client_has_left(receive):
                self.left = True
            if not self.left:
                await self._send(send, {"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.shield(self._task)  # settled: a drain waits for this response
        if not self.left:
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        try:
            await send(message)
        except Exception:  # the caller is gone; the reader goes on
            self.left = True


def count_event(raw: bytes, call: CallLog) -> bool:
    """Count one event into ``call``; True if it ends the stream (``completed`` or ``[DONE]``)."""
    data = b"\n".join(
        line[5:].removeprefix(b" ").rstrip(b"\r") for line in raw.split(b"\n") if line.startswith(b"data:")
    )
    if not data:
        return False
    if data.strip() == b"[DONE]":
        return True
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == SUCCEEDED:
        call.images += 1
    elif kind == FAILED:
        error = document.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        name = code if isinstance(code, str) and code else "unknown"
        call.failed_images[name] = call.failed_images.get(name, 0) + 1
    elif kind == COMPLETED:
        usage = document.get("usage")
        generated = usage.get("generated_images") if isinstance(usage, dict) else None
        if type(generated) is int:
            call.upstream_images = generated
        return True
    return False


# What a stream's reading failure is recorded as (anything else: "stream_broken").
STREAM_FAILURES = {"stalled": "stream_stalled", "timeout": "timeout"}
STREAM_ERRORS = {
    "stream_broken": ("upstream_stream_broken", "The image service's stream broke off"),
    "stream_stalled": ("upstream_stream_stalled", "The image service's stream stalled"),
    "timeout": ("upstream_timeout", "The image service's stream ran past the gateway's time limit"),
}


def error_event(failure: str) -> bytes:
    """``event: error`` with the OpenAI error envelope, ending a stream that broke or stalled."""
    code, what = STREAM_ERRORS[failure]
    error = GatewayError(
        502,
        f"{what}. The images sent before this event are delivered and charged; the call is "
        "recorded for reconciliation.",
        "server_error",
        code,
        retry=False,
    )
    return b"event: error\ndata: " + error.body() + b"\n\n"
