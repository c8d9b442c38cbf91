"""Step 4: the upstream call, and what its answer means: images to charge, or an error.

Nothing here touches Redis: the route settles whatever this step found, failures included
(they cost nothing but are recorded), and only then answers the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.call.answer_scan import ImagesScanner, Malformed
from gateway.call.attempts import reach
from gateway.call.log import CallLog, count_failure
from gateway.call.openai_compat import conform_images_body
from gateway.core.errors import GatewayError
from gateway.upstream.failures import bad_response_error
from gateway.upstream.reply import UpstreamReply
from gateway.upstream.routing import Channel, Router


@dataclass
class Verdict:
    """What the upstream's answer means for the caller: a body to send, or the error to answer
    with instead. Or, for a 200 too large to buffer, the ``reply`` itself, its beginning read and
    the rest to come, which gateway/call/relay.py sends on as it arrives, counting the images as
    they go by: ``scanner`` has read the beginning already, and ``head`` is what it gave to send.
    """

    body: bytes | None = None
    error: GatewayError | None = None
    reconcile: bool = False  # the upstream may have billed what the gateway could not count
    reply: UpstreamReply | None = None
    scanner: ImagesScanner | None = None
    head: list[bytes] = field(default_factory=list)


async def forward(router: Router, body: bytes, call: CallLog) -> Verdict:
    """POST the caller's bytes to the call's channels in turn (gateway/call/attempts.py); fill in
    the call's upstream fields and images delivered."""

    async def send(channel: Channel, sent: bytes, deadline: float) -> UpstreamReply:
        return await channel.client.generate(sent, deadline)

    reached = await reach(router, body, call, send)
    judgement, reply = reached.judgement, reached.reply
    if judgement is not None:
        # An answer refused for its size, or unreadable, was made (and maybe billed) upstream.
        return Verdict(error=reached.error, reconcile=judgement.reconcile or judgement.outcome == "too_large")
    assert reply is not None
    if not reply.whole:  # the outcome and the images are known once it has been read
        # Its beginning is scanned before the caller gets a status: an answer already unreadable
        # there (nested past the scan's depth, not JSON) is an ordinary 502, not a cut connection.
        scanner = ImagesScanner()
        try:
            head = scanner.feed(reply.body)
        except Malformed:
            await reply.aclose()
            call.upstream_outcome = "bad_response"
            return Verdict(error=bad_response_error(), reconcile=True)
        return Verdict(reply=reply, scanner=scanner, head=head)

    answer = deliverable(reached.channel.client.redact_bytes(reply.body), call)
    del reply  # with multi-MB images, keep one copy of the answer in memory, not two
    if answer is None:
        call.upstream_outcome = "bad_response"
        return Verdict(error=bad_response_error(), reconcile=True)
    call.upstream_outcome = "ok"
    disagrees = call.upstream_images is not None and call.upstream_images != call.images
    return Verdict(body=answer, reconcile=disagrees)


def deliverable(raw: bytes, call: CallLog) -> bytes | None:
    """The body for the caller of a 200 answer, counting its images into ``call``; None if unreadable.

    The parsed copy lives only inside this function, so it is freed before the answer is sent.
    """
    payload = parse_images_body(raw)
    if payload is None:
        return None
    count_images(payload, call)
    return conform_images_body(raw, payload)


def count_images(payload: dict[str, Any], call: CallLog) -> None:
    """Only entries that are images are charged: Seedream answers an image it could not make
    (content safety, most often) with ``{"error": {"code", "message"}}`` in its place."""
    images = 0
    for entry in payload["data"]:
        if is_image(entry):
            images += 1
            continue
        error = entry.get("error") if isinstance(entry, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        count_failure(call.failed_images, code if isinstance(code, str) and code else "unknown")
    call.images = images
    usage = payload.get("usage")
    generated = usage.get("generated_images") if isinstance(usage, dict) else None
    if type(generated) is int:
        call.upstream_images = generated


def is_image(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    return any(isinstance(entry.get(name), str) and entry[name] for name in ("url", "b64_json"))


def parse_images_body(body: bytes) -> dict[str, Any] | None:
    """A 200 body with its ``data`` list (the images to charge for); None if it is not that."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return None
    return payload
