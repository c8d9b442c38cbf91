"""What a generation call produces and the 200 answer that carries it.

``plan_answer`` decides, from the request and its fault, which entries are images and which
failed, and what ``usage`` claims; the JSON answer (here) and the event stream (``stream``) are
two renderings of that one plan, so they cannot disagree.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.simulator.errors import code_message
from gateway.simulator.faults import Fault
from gateway.simulator.images import image_base64
from gateway.simulator.jobs import Job

_FAILED_MESSAGE = "The image could not be generated."


@dataclass(frozen=True, slots=True)
class Plan:
    """Per entry, ``None`` for an image or the error code of a failed one; and the usage."""

    entries: tuple[str | None, ...]
    usage: dict[str, int] | None


def _check_fault(fault: Fault, job: Job, count: int) -> None:
    """A fault that cannot apply to this call is a mistake in the test: say so."""
    if fault.fail_images != "all" and fault.fail_images and fault.fail_images[-1] >= count:
        raise ValueError(f"fail_images index {fault.fail_images[-1]} is past this answer's {count} entries")
    for name in ("break_after", "stall_after"):
        events = getattr(fault, name)
        if events is None:
            continue
        if not job.stream:
            raise ValueError(f"{name} applies to streamed calls only (stream: true)")
        if events > count + 1:
            raise ValueError(f"{name}={events} is past this stream's {count + 1} events")


def plan_answer(job: Job, fault: Fault) -> Plan:
    """The entries and usage of this call; ``ValueError`` for a fault that cannot apply."""
    count = job.count if fault.images is None else fault.images
    _check_fault(fault, job, count)
    entries = tuple(fault.fail_code if fault.fails(index) else None for index in range(count))
    if fault.usage_images == "none":
        return Plan(entries, None)
    claimed = entries.count(None) if fault.usage_images is None else int(fault.usage_images)
    # Seedream bills an image at width * height / 256 output tokens.
    tokens = claimed * (job.width * job.height // 256)
    return Plan(entries, {"generated_images": claimed, "output_tokens": tokens, "total_tokens": tokens})


def failed_entry(code: str) -> dict[str, Any]:
    """A ``data`` entry for an image that was not made."""
    return {"error": {"code": code, "message": code_message(code, _FAILED_MESSAGE)}}


def image_url(base_url: str, job: Job, image_bytes: int) -> str:
    """A new image's URL on this simulator. Its name carries everything needed to redraw the
    image, so serving it needs no storage."""
    name = f"{job.width}x{job.height}-{image_bytes}-{random.getrandbits(48):012x}"
    return f"{base_url}/images/{name}.{job.output_format}"


def success_body(base_url: str, job: Job, plan: Plan, image_bytes: int) -> list[bytes]:
    """The 200 body as byte strings to send one after the other; ``base_url`` reaches this
    simulator.

    A b64 body is assembled around the cached base64 bytes instead of serialised whole: 1,000
    concurrent 8 MB answers then share one copy of the image rather than holding 8 GB of
    identical JSON. Base64 needs no JSON escaping, so splicing it in is safe.
    """
    head = orjson.dumps({"model": job.model, "created": int(time.time())})[:-1] + b',"data":['
    tail = b"]}" if plan.usage is None else b'],"usage":' + orjson.dumps(plan.usage) + b"}"
    if job.response_format == "url":
        data = [
            failed_entry(code) if code else {"url": image_url(base_url, job, image_bytes), "size": job.size}
            for code in plan.entries
        ]
        return [head, orjson.dumps(data)[1:-1], tail]
    b64 = image_base64(job.output_format, job.width, job.height, image_bytes)
    item_tail = b'","size":"' + job.size.encode() + b'"}'
    parts = [head]
    for index, code in enumerate(plan.entries):
        comma = b"," if index else b""
        if code:
            parts.append(comma + orjson.dumps(failed_entry(code)))
        else:
            parts += (comma + b'{"b64_json":"', b64, item_tail)
    parts.append(tail)
    return parts
