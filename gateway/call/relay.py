"""Steps 4-6 for a large answer: send it on as it arrives, count its images, then settle.

A 200 answer larger than ``upstream.BUFFERED_ANSWER_BYTES`` (base64 images) is not buffered:
each chunk goes through the incremental scanner (gateway/call/answer_scan.py), has every channel's key
masked, and is sent to the caller, so memory per call stays at a few chunks whatever the size.
The cost headers cannot precede the count, so this answer carries none: the charge is settled
when the upstream's body has ended, before the caller's body is completed, and the ledger and
``GET /admin/v1/keys/{id}/usage`` show it.

An answer that breaks mid-way (dropped, timed out, malformed JSON, past
``GATEWAY_MAX_UPSTREAM_RESPONSE_BYTES``) is charged nothing, recorded for reconciliation like an
unreadable buffered 200, and the caller's connection is cut: its body is never finished with a
made-up tail, so its client sees a transfer error, never a truncated document that parses.
Nothing is charged for the images that did arrive: a caller whose JSON never ends cannot use them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from gateway.call.answer_scan import ImagesScanner, Malformed
from gateway.call.ending import Relayed
from gateway.call.log import CallLog
from gateway.core.secret_mask import Secrets
from gateway.upstream.reply import BodyFailure, UpstreamReply

log = logging.getLogger("gateway")

Settle = Callable[[bool], Awaitable[object]]  # reconcile -> (settles the call as it now stands)


class JsonRelay(Relayed):
    """The caller's response to a large answer, sent on as it arrives; its call ends with it."""

    def __init__(
        self,
        reply: UpstreamReply,
        call: CallLog,
        mask: Secrets,
        settle: Settle,
        headers: dict[str, str],
        scanner: ImagesScanner,
        head: list[bytes],
    ) -> None:
        """``scanner`` has read the answer's beginning already (``reply.body``); ``head`` is what it
        gave to send on."""
        super().__init__(None, 200, headers, media_type="application/json")
        # The length is not known before the end: the body goes out chunked.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.reply, self.call, self.settle = reply, call, settle
        self.scanner, self.head = scanner, head
        self.masker = mask.masker()
        self.finished = False  # the whole answer reached the caller (or would have: it left)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._relay(send)
        except Exception as exc:  # a fault of the gateway's own: the caller's connection is cut
            self.failure = exc
            log.exception("request %s failed in the gateway, relaying the answer", self.call.request_id)
        finally:
            await self.ended(self.finished)

    async def _relay(self, send: Send) -> None:
        call, reply = self.call, self.reply
        scanner, sender = self.scanner, _Sender(send, call)
        try:
            await sender.start(self.raw_headers)
            await sender.send(self.masker.feed(b"".join(self.head)))
            while chunk := await reply.read():
                for piece in scanner.feed(chunk):
                    await sender.send(self.masker.feed(piece))
            scanner.finish()
        except (BodyFailure, Malformed) as failure:
            too_large = isinstance(failure, BodyFailure) and failure.reason == "too_large"
            await self._cut("too_large" if too_large else "bad_response", str(failure), reply.received)
            return
        finally:
            await reply.aclose()
        call.upstream_outcome, call.images = "ok", scanner.images
        call.failed_images, call.upstream_images = scanner.failed_images, scanner.upstream_images
        disagrees = call.upstream_images is not None and call.upstream_images != call.images
        await self.settle(disagrees)
        await sender.send(self.masker.flush())
        await sender.send(b"", more_body=False)
        self.finished = True

    async def _cut(self, outcome: str, why: str, received: int) -> None:
        """No charge, a record for reconciliation, and the caller's body left unfinished."""
        call = self.call
        call.upstream_outcome, call.images, call.failed_images = outcome, 0, {}
        await self.settle(True)
        log.warning(
            "request %s: the upstream's answer broke off after %d bytes (%s, %s): the caller's "
            "connection is cut, nothing charged, recorded for reconciliation",
            call.request_id,
            received,
            outcome,
            why,
        )
        # Returning without the final body message makes the server close the connection.


class _Sender:
    """Sends body pieces; once the caller has gone, keeps quiet so the answer can still be counted."""

    def __init__(self, send: Send, call: CallLog) -> None:
        self._send, self._call = send, call

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        except OSError:  # gone already: the answer is still read and counted
            self._call.client_left = True

    async def send(self, piece: bytes, *, more_body: bool = True) -> None:
        if self._call.client_left or (not piece and more_body):
            return
        try:
            await self._send({"type": "http.response.body", "body": piece, "more_body": more_body})
        except OSError:  # the caller hung up: its images are still made and billed, count them
            self._call.client_left = True
