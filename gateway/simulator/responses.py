"""Writing answers on the wire: JSON, large bodies in chunks, garbage and dropped connections."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator.errors import invalid_envelope

SEND_CHUNK = 256 * 1024


def json_response(status: int, document: Any) -> web.Response:
    """``document`` as a JSON answer with ``status``."""
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


def invalid_response(message: str, param: str | None) -> web.Response:
    """The upstream's 400 for a request it will not run."""
    return json_response(400, invalid_envelope(message, param))


async def send(
    request: web.Request, parts: list[bytes], content_type: str = "application/json"
) -> web.StreamResponse:
    """Answer 200 with ``parts`` concatenated, copying at most ``SEND_CHUNK`` bytes at a time.

    Small bodies go out as one ordinary response. Large ones are streamed with a
    Content-Length, so each connection holds one chunk, not its own copy of a many-MB body,
    and a slow reader applies back-pressure instead of growing a buffer.
    """
    total = sum(map(len, parts))
    if total <= SEND_CHUNK:
        return web.Response(body=b"".join(parts), content_type=content_type)
    response = web.StreamResponse()
    response.content_type = content_type
    response.content_length = total
    await response.prepare(request)
    try:
        for chunk in rechunk(parts, SEND_CHUNK):
            await response.write(chunk)
    except ConnectionError:
        # The client went away mid-body; aiohttp handles the rest quietly.
        pass
    return response


def rechunk(parts: list[bytes], size: int) -> Iterator[bytes]:
    """``parts`` regrouped into chunks of ``size`` bytes (the last one shorter)."""
    pending: list[memoryview] = []
    pending_len = 0
    for part in parts:
        view = memoryview(part)
        while view:
            piece = view[: size - pending_len]
            pending.append(piece)
            pending_len += len(piece)
            view = view[len(piece) :]
            if pending_len == size:
                yield b"".join(pending)
                pending, pending_len = [], 0
    if pending:
        yield b"".join(pending)


def garbage_response(request: web.Request, kind: str, status: int) -> web.Response:
    """An answer the client cannot read: an HTML page, or JSON cut off midway."""
    if kind == "html":
        return web.Response(status=status, text="<html>oops</html>", content_type="text/html")
    base = f"{request.scheme}://{request.host}"
    cut = f'{{"created": {int(time.time())}, "data": [{{"url": "{base}/im'
    return web.Response(status=status, body=cut.encode(), content_type="application/json")


def drop(request: web.Request) -> web.Response:
    """Close the connection with nothing written.

    The returned response is never sent: aiohttp's attempt to write it to the closed transport
    raises a ConnectionError, which it treats as a client that went away and stays quiet about.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)
