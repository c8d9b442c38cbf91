"""Step 4 with ``"stream": true``: relay the upstream's server-sent events, and count them.

Every check (key, body, model, limits, the reservation) has happened before this step; an
upstream refusal before its first event (its JSON 4xx/5xx) maps as without streaming, and moves
on to the next channel on the same terms (gateway/upstream/routing.py): never once a stream began.
Once the upstream streams, its bytes are passed on as they arrive, byte for byte (every channel's
key masked, however JSON spells it, should it ever appear), and read as they go by to count
(gateway/call/sse.py): one charged image per ``image_generation.partial_succeeded`` event,
nothing for ``partial_failed``, and the ``completed`` event's ``usage.generated_images`` kept
beside the count. Nothing waits for an event to end before it is relayed, and nothing is held but
the pipe to the caller: memory per stream does not grow with an event's size, and the work is
linear in the stream's.

Two coroutines, so that a caller who hangs up does not stop the upstream call it is billed for:

- the *reader*, a task of its own, reads the upstream stream to its end, counts, puts what it
  relays in a bounded pipe (gateway/call/pipe.py), settles exactly once when the upstream's stream
  ends (or breaks, stalls, or passes ``GATEWAY_MAX_UPSTREAM_RESPONSE_BYTES``), then ends the call
  (gateway/call/ending.py: the route releases what it held, observes);
- the *response* (:meth:`EventRelay.__call__`, the ASGI response) sends what the pipe holds while
  the caller is there, and returns only once the reader has settled, so a SIGTERM drain waits.

A caller that does not read fills the pipe: the reader then waits (within the call's deadline)
and stops reading the upstream, whose connection's flow control stops the upstream in turn. A
caller that has gone is not waited for: the stream is read to its end and counted all the same.

Timeouts: ``GATEWAY_UPSTREAM_STREAM_IDLE_TIMEOUT_S`` bounds the wait for the headers and for each
piece of the stream (Seedream makes an image every few tens of seconds: a quiet stream longer than
that has stalled); ``GATEWAY_UPSTREAM_TIMEOUT_S`` still bounds the whole stream, since the
reservation lives that long. A stream that breaks, stalls, runs out of time or passes the size
cap ends with an ``event: error`` carrying the OpenAI error envelope, after the line and the event
the cut left open are ended (so the error is an event of its own); the images whose events were
delivered whole before it are charged, and the record is flagged for reconciliation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from gateway.call.attempts import reach
from gateway.call.client import client_has_left
from gateway.call.ending import Relayed
from gateway.call.log import CallLog
from gateway.call.pipe import Pipe
from gateway.call.sse import EventReader
from gateway.core.errors import GatewayError
from gateway.core.secret_mask import Secrets
from gateway.upstream.failures import bad_response_error
from gateway.upstream.reply import BodyFailure, UpstreamReply
from gateway.upstream.routing import Channel, Router

log = logging.getLogger("gateway")

# What the pipe to the caller holds before the reader waits for it: a few of the upstream's pieces.
PIPE_BYTES = 1024 * 1024

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
        mask=reached.channel.client.mask,
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
        mask: Secrets,
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
        self._upstream, self._masker, self._settle = reply, mask.masker(), settle
        self._idle_s, self._started = idle_timeout_s, started
        self._receive = receive
        self._events = EventReader(call)
        self._pipe = Pipe(PIPE_BYTES)
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
            self._pipe.put_now(self._masker.flush())
            if failure is not None:
                self._pipe.put_now(self._events.closing() + error_event(failure))
            call.client_left = self.left or client_has_left(self._receive)
            disagrees = call.upstream_images is not None and call.upstream_images != call.images
            await self._settle(failure is not None or disagrees)
        except Exception as exc:  # the call's end releases what it still holds
            self._failed(exc)
        finally:
            self._pipe.close()
            await self.ended(failure is None and not self.left)
        if cancelled:
            raise asyncio.CancelledError

    def _failed(self, exc: Exception) -> None:
        self.failure = self.failure or exc
        log.error("request %s failed in the gateway, relaying the stream", self.call.request_id, exc_info=exc)

    async def _relay_upstream(self) -> str | None:
        """Relay and count every piece as it arrives; None if the stream ended whole, else what
        went wrong."""
        read, idle_s, events, masker = self._upstream.read, self._idle_s, self._events, self._masker
        try:
            while piece := await read(idle_s):
                events.feed(piece)
                out = masker.feed(piece)
                if out:
                    # The caller's pace, within the call's deadline: a full pipe stops the reading.
                    async with asyncio.timeout_at(self._upstream.deadline):
                        await self._pipe.put(out)
        except BodyFailure as failure:  # dropped, cut short, stalled, past the deadline or the cap
            return STREAM_FAILURES.get(failure.reason, "stream_broken")
        except TimeoutError:  # the caller read too slowly for the stream to end in time
            return "timeout"
        return None if events.ended else "stream_broken"

    # -- the response --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await self._send(send, start)
        while (piece := await self._pipe.get()) is not None:
            if not self.left and client_has_left(receive):
                self._leave()
            if not self.left:
                await self._send(send, {"type": "http.response.body", "body": piece, "more_body": True})
        await asyncio.shield(self._task)  # settled: a drain waits for this response
        if not self.left:
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        try:
            await send(message)
        except Exception:  # the caller is gone; the reader goes on
            self._leave()

    def _leave(self) -> None:
        """The caller has gone: nothing more is kept for it, and the reader never waits for it."""
        self.left = True
        self._pipe.discard()


# What a stream's reading failure is recorded as (anything else: "stream_broken").
STREAM_FAILURES = {"stalled": "stream_stalled", "timeout": "timeout", "too_large": "too_large"}
STREAM_ERRORS = {
    "stream_broken": ("upstream_stream_broken", "The image service's stream broke off"),
    "stream_stalled": ("upstream_stream_stalled", "The image service's stream stalled"),
    "timeout": ("upstream_timeout", "The image service's stream ran past the gateway's time limit"),
    "too_large": (
        "upstream_response_too_large",
        "The image service's stream passed the gateway's size limit",
    ),
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
