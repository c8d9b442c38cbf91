"""The answer of a ``"stream": true`` call: server-sent events, as Seedream 4.0/4.5 send them.

One ``image_generation.partial_succeeded`` (or ``partial_failed``) event per entry of the plan,
``stream_gap`` seconds apart as if each image took that long to make; then
``image_generation.completed`` with the usage; then ``data: [DONE]``. The headers go out with
the first event, as the upstream's do. Faults can drop the connection after some events
(``break_after``) or go quiet after some (``stall_after`` for ``stall`` seconds), which is how a
gateway's handling of a broken or stalled upstream stream is tested.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator.answers import Plan, failed_entry, image_url
from gateway.simulator.faults import Fault
from gateway.simulator.images import image_base64
from gateway.simulator.jobs import Job

SUCCEEDED = "image_generation.partial_succeeded"
FAILED = "image_generation.partial_failed"
COMPLETED = "image_generation.completed"
DONE = b"data: [DONE]\n\n"


def sse(document: dict[str, Any]) -> bytes:
    """One event: its ``event:`` line equals the data's ``type``, as the upstream sends them."""
    return b"event: %s\ndata: %s\n\n" % (document["type"].encode(), orjson.dumps(document))


def _entry_event(base_url: str, job: Job, index: int, code: str | None, image_bytes: int) -> bytes:
    head = {"model": job.model, "created": int(time.time()), "image_index": index}
    if code:
        return sse({"type": FAILED, **head, **failed_entry(code)})
    if job.response_format == "url":
        picture = {"url": image_url(base_url, job, image_bytes)}
    else:
        picture = {"b64_json": image_base64(job.output_format, job.width, job.height, image_bytes).decode()}
    return sse({"type": SUCCEEDED, **head, **picture, "size": job.size})


def events(base_url: str, job: Job, plan: Plan, image_bytes: int) -> Iterator[bytes]:
    """The stream's events in order, made one at a time so a set of large b64 images is never
    held whole."""
    for index, code in enumerate(plan.entries):
        yield _entry_event(base_url, job, index, code, image_bytes)
    completed: dict[str, Any] = {"type": COMPLETED, "model": job.model, "created": int(time.time())}
    if plan.usage is not None:
        completed["usage"] = plan.usage
    yield sse(completed)


async def send_stream(
    request: web.Request, answer: Iterator[bytes], images: int, gap: float, fault: Fault
) -> web.StreamResponse:
    """Write ``answer`` (``images`` entry events, then ``completed``) as ``text/event-stream``.

    A client that leaves ends the stream quietly, as it would end the upstream's.
    """
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    try:
        for sent, event in enumerate(answer):
            if sent == fault.break_after:
                return await _break(request, response)
            if sent == fault.stall_after:
                await asyncio.sleep(fault.stall)
            if 0 < sent < images and gap > 0:
                await asyncio.sleep(gap)
            if not response.prepared:
                await response.prepare(request)
            await response.write(event)
        if fault.break_after is not None:  # after the last event, before [DONE]
            return await _break(request, response)
        await response.write(DONE)
    except ConnectionError:
        pass
    return response


async def _break(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Drop the connection: the headers and what was written arrive, then the chunked body ends
    unfinished."""
    if not response.prepared:
        await response.prepare(request)
    await response.drain()
    if request.transport is not None:
        request.transport.close()
    return response
