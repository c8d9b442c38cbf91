"""Step 4: the upstream call, and what its answer means: images to charge, or an error.

Nothing here touches Redis: the route settles whatever this step found, failures included
(they cost nothing but are recorded), and only then answers the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.call.log import CallLog
from gateway.errors import GatewayError
from gateway.openai_compat import conform_images_body
from gateway.upstream import UpstreamClient, UpstreamFailure, bad_response_error, map_error_reply


@dataclass
class Forwarded:
    """The upstream's verdict: a body for the caller, or the error to answer with instead."""

    body: bytes | None = None
    error: GatewayError | None = None
    reconcile: bool = False  # the upstream may have billed what the gateway could not count


async def forward(upstream: UpstreamClient, body: bytes, call: CallLog) -> Forwarded:
    """POST the caller's bytes; fill in the call's upstream fields and images delivered."""
    try:
        reply = await upstream.generate(body)
    except UpstreamFailure as failure:
        call.upstream_latency_s, call.upstream_outcome = failure.latency_s, failure.reason
        return Forwarded(error=failure.error)

    call.upstream_status, call.upstream_latency_s = reply.status, reply.latency_s
    if reply.status != 200:
        call.upstream_outcome, error = map_error_reply(reply, upstream.redact)
        return Forwarded(error=error)

    delivered = deliverable(reply.body)
    del reply  # with multi-MB images, keep one copy of the answer in memory, not two
    if delivered is None:
        call.upstream_outcome = "bad_response"
        return Forwarded(error=bad_response_error(), reconcile=True)
    call.images, answer = delivered
    call.upstream_outcome = "ok"
    return Forwarded(body=answer)


def deliverable(raw: bytes) -> tuple[int, bytes] | None:
    """(images to charge for, body for the caller) of a 200 answer; None if it is unreadable.

    The parsed copy lives only inside this function, so it is freed before the answer is sent.
    """
    payload = parse_images_body(raw)
    if payload is None:
        return None
    return len(payload["data"]), conform_images_body(raw, payload)


def parse_images_body(body: bytes) -> dict[str, Any] | None:
    """A 200 body with its ``data`` list (the images to charge for); None if it is not that."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return None
    return payload
