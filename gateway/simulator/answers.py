"""The upstream's 200 answer, built as a list of byte strings to send one after the other."""

from __future__ import annotations

import random
import time

import orjson

from gateway.simulator.jobs import Job
from gateway.simulator.png import png_base64


def image_id(job: Job, image_bytes: int) -> str:
    """An image's URL name. It carries everything needed to redraw the image, so serving it needs
    no storage."""
    return f"{job.width}x{job.height}-{image_bytes}-{random.getrandbits(48):012x}"


def success_body(base_url: str, job: Job, count: int, image_bytes: int) -> list[bytes]:
    """The 200 body of ``count`` images; ``base_url`` is where this simulator is reached.

    A b64 body is assembled around the cached base64 bytes instead of serialised whole: 1,000
    concurrent 8 MB answers then share one copy of the image rather than holding 8 GB of
    identical JSON. Base64 needs no JSON escaping, so splicing it in is safe.
    """
    size = f"{job.width}x{job.height}"
    # Seedream bills an image at width * height / 256 output tokens.
    tokens = count * (job.width * job.height // 256)
    usage = {"generated_images": count, "output_tokens": tokens, "total_tokens": tokens}
    head = b'{"created":%d,"data":[' % int(time.time())
    tail = b'],"usage":' + orjson.dumps(usage) + b"}"
    if job.response_format == "url":
        base = f"{base_url}/images/"
        data = [{"url": f"{base}{image_id(job, image_bytes)}.png", "size": size} for _ in range(count)]
        return [head, orjson.dumps(data)[1:-1], tail]
    b64 = png_base64(job.width, job.height, image_bytes)
    item_tail = b'","size":"' + size.encode() + b'"}'
    parts = [head]
    for index in range(count):
        parts += (b',{"b64_json":"' if index else b'{"b64_json":"', b64, item_tail)
    parts.append(tail)
    return parts
