"""A local stand-in for the upstream image API (gogogotoken's OpenAI-compatible endpoint).

The simulator answers ``POST /v1/images/generations`` the way the upstream does (same request
fields, same response and error shapes), returns real PNG images, and can be told per request to
misbehave. The gateway's tests, ``make run`` and the benchmark all run against it, so nobody needs
a paid upstream key to develop, test or load-test the gateway.

Run it::

    gateway simulate-upstream --port 9001 --api-key sk-sim --latency 2
    python -m gateway.simulator --port 9001            # the same, without the CLI wrapper

Endpoints
---------

``POST /v1/images/generations``
    With ``--api-key`` set, the request must carry ``Authorization: Bearer <key>``; otherwise it
    is rejected at once (before any latency or fault) with the upstream's 401 envelope
    ``{"error": {"message": "Invalid API key", "type": "invalid_request_error",
    "code": "invalid_api_key"}}``. Without ``--api-key`` any key, or none, is accepted.

    The body must be a JSON object with string ``model`` and ``prompt``. ``n`` (default 1) images
    are returned, or with ``"sequential_image_generation": "auto"`` exactly
    ``sequential_image_generation_options.max_images`` (default 15) images, whatever ``n`` says.
    ``size`` is ``WxH`` or a preset ``1K``/``2K``/``3K``/``4K`` (default ``1024x1024``).
    ``response_format`` ``url`` (default) gives ``{"url": ..., "size": "WxH"}`` items whose URLs
    point back at this simulator; ``b64_json`` gives ``{"b64_json": ..., "size": "WxH"}``.
    Every other field (``image``, ``seed``, ``watermark``, ...) is accepted and ignored.
    Invalid input gets a 400 ``{"error": {"message", "type": "invalid_request_error", "param",
    "code": "InvalidParameter"}}``.

``GET /images/{id}.png``
    The image behind a ``url`` item.

``GET /_simulator/requests``
    What the simulator received, for tests: ``{"count": N, "requests": [...]}``, where ``count``
    is the number of generation calls since start or reset and ``requests`` holds the last 1,000
    of them, oldest first, each ``{"method", "path", "headers": {lower-cased name: value},
    "body_b64": <the raw body, base64>, "received_at": <unix seconds>}``. Bodies are returned
    byte for byte, so a test can prove a prompt arrived unaltered.

``POST /_simulator/reset``
    Forget the recorded calls and zero the count.

``GET /healthz``
    ``{"status": "ok"}``.

The ``/_simulator`` endpoints have no authentication: the simulator is a development tool; do
not expose it.

``--latency SECONDS`` makes every authenticated generation call wait that long before answering,
without blocking other calls (1,000 concurrent calls at 2 s finish in about 2 s).

Faults
------

A fault is a comma-separated list of ``name=value`` pairs, for example ``status=500,delay=1``.
It can be given three ways; the first one present wins whole (they are not merged):

1. the request header ``x-simulator-fault: status=500,delay=1``;
2. the query parameter ``?simulator_fault=status%3D500%2Cdelay%3D1``;
3. the body field ``"simulator_fault": "status=500,delay=1"`` -- the way to reach the simulator
   *through* the gateway, which forwards unknown body fields but not arbitrary headers.

- ``status=CODE``: answer CODE (400-599) with an upstream-style error envelope. 500 gives
  ``{"error": {"message": "internal error", "type": "server_error", "code": "internal_error"}}``;
  401 ``invalid_api_key``; 402 ``insufficient_balance``; 403 ``access_denied``; 429
  ``rate_limit_exceeded``; 502 ``bad_gateway``; 400 ``InvalidParameter``; others a generic one.
- ``code=STRING``: the ``code`` of that envelope, e.g. ``code=OutputImageSensitiveContentDetected``
  for a content-safety rejection. Without ``status`` the status is 400.
- ``delay=SECONDS``: wait this long before answering, instead of ``--latency``.
- ``drop=1``: read the request, wait (``delay`` or ``--latency``), then close the connection
  without answering: the client sees a disconnect.
- ``garbage=1``: answer ``<html>oops</html>`` as ``text/html`` (status 200, or ``status``).
- ``garbage=truncated``: answer ``application/json`` whose JSON is cut off midway.
- ``images=K``: return exactly K images (0 to 100), whatever ``n`` or ``max_images`` asked.
- ``image_bytes=B``: make each image about B bytes of base64, i.e. a PNG of about 3B/4 bytes (also
  behind ``url`` items). The PNG carries incompressible padding in a private ancillary chunk, so
  it stays a valid image of the requested size.

Faults act after the key check and after the wait. ``drop`` wins over ``status`` and
``garbage``, which win over the normal answer (the body is then not validated). A malformed
fault (unknown name, bad value) gets a 400 whose ``param`` is ``simulator_fault``, so a typo in
a test fails loudly instead of silently testing the happy path.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import random
import re
import signal
import struct
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

__all__ = ["build_parser", "create_app", "main", "parse_fault", "Fault", "run"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
DEFAULT_SIZE = (1024, 1024)
SIZE_PRESETS = {"1K": 1024, "2K": 2048, "3K": 3072, "4K": 4096}

FAULT_HEADER = "x-simulator-fault"
FAULT_FIELD = "simulator_fault"

# Limits that keep one mistyped request from eating the machine; all far above what the
# upstream itself allows.
MAX_SIDE = 8192
MAX_PIXELS = 4096 * 4096
MAX_IMAGES = 100
MAX_SEQUENTIAL_IMAGES = 15
MAX_IMAGE_BYTES = 256 * 1024 * 1024
MAX_DELAY = 3600.0
MAX_REQUEST_BODY = 256 * 1024 * 1024  # image-to-image bodies carry up to 14 base64 images
RECORD_LIMIT = 1000
_SEND_CHUNK = 256 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = len(_PNG_SIGNATURE) + 4 + 4 + 13 + 4
# A private (2nd letter lower case), safe-to-copy (4th lower case) ancillary chunk type: decoders
# skip it, so a padded image still decodes to the same pixels.
_PAD_CHUNK = b"spAd"
_PALETTE = bytes((0x1F, 0x4E, 0x79, 0x4F, 0x9D, 0xD9, 0xF2, 0xA1, 0x3B, 0xF5, 0xF0, 0xE6))

_SIZE_RE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
_IMAGE_ID_RE = re.compile(r"^([0-9]+)x([0-9]+)-([0-9]+)-[0-9a-f]+$")


# --- Errors -------------------------------------------------------------------------------------

_STATUS_ERRORS: dict[int, tuple[str, str, str]] = {
    # status: (message, type, code), as the upstream words them where its docs show them.
    400: ("The request is invalid.", "invalid_request_error", "InvalidParameter"),
    401: ("Invalid API key", "invalid_request_error", "invalid_api_key"),
    402: ("Insufficient balance", "insufficient_quota", "insufficient_balance"),
    403: ("Access denied", "invalid_request_error", "access_denied"),
    429: ("Rate limit exceeded", "rate_limit_error", "rate_limit_exceeded"),
    500: ("internal error", "server_error", "internal_error"),
    502: ("bad gateway", "server_error", "bad_gateway"),
    503: ("service unavailable", "server_error", "service_unavailable"),
}

_CODE_MESSAGES: dict[str, str] = {
    "OutputImageSensitiveContentDetected": "The request failed because the output image may "
    "contain sensitive information.",
    "OutputImageRiskDetection": "The request failed because the output image may contain risky content.",
    "ContentSecurityDetectionError": "The request failed because content security detection flagged it.",
}


def _json_response(status: int, document: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


def error_envelope(status: int, code: str | None = None) -> dict[str, Any]:
    """The upstream's error body for ``status``, optionally with a specific ``code``."""
    default = _STATUS_ERRORS.get(status)
    if default is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        try:
            reason = HTTPStatus(status).phrase.lower()
        except ValueError:  # a status with no registered name, e.g. 599
            reason = "upstream error"
        default = (reason, kind, re.sub(r"[^a-z0-9]+", "_", reason))
    message, kind, default_code = default
    error: dict[str, Any] = {
        "message": _CODE_MESSAGES.get(code or "", message),
        "type": kind,
    }
    if status == 400:
        # The upstream's 400s name the offending parameter; a forced one has none.
        error["param"] = None
    error["code"] = code or default_code
    return {"error": error}


def _invalid(message: str, param: str | None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": "InvalidParameter"}
    return _json_response(400, {"error": error})


class InvalidRequest(ValueError):
    """A request the upstream would answer with 400; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


# --- Faults -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """How one request should misbehave. The default instance means: behave."""

    status: int | None = None
    code: str | None = None
    delay: float | None = None
    drop: bool = False
    garbage: str | None = None  # "html" or "truncated"
    images: int | None = None
    image_bytes: int | None = None

    @property
    def forced_status(self) -> int | None:
        """The error status to answer, if any: a bare ``code`` means a 400, like content safety."""
        if self.status is not None:
            return self.status
        return 400 if self.code is not None else None


NO_FAULT = Fault()


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _seconds(value: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= MAX_DELAY):
        raise ValueError(f"must be between 0 and {MAX_DELAY:g} seconds")
    return number


def _flag(value: str) -> bool:
    if value.lower() in {"1", "true", "yes"}:
        return True
    if value.lower() in {"0", "false", "no"}:
        return False
    raise ValueError("must be 1 or 0")


def _garbage(value: str) -> str | None:
    lowered = value.lower()
    if lowered in {"1", "true", "html"}:
        return "html"
    if lowered == "truncated":
        return "truncated"
    if lowered in {"0", "false"}:
        return None
    raise ValueError("must be 1 (an HTML page) or truncated (cut-off JSON)")


def _code(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


_FAULT_FIELDS: dict[str, Callable[[str], Any]] = {
    "status": _int_in(400, 599),
    "code": _code,
    "delay": _seconds,
    "drop": _flag,
    "garbage": _garbage,
    "images": _int_in(0, MAX_IMAGES),
    "image_bytes": _int_in(0, MAX_IMAGE_BYTES),
}


def parse_fault(spec: str) -> Fault:
    """Parse ``name=value,name=value``; raise ``ValueError`` naming the first bad pair."""
    values: dict[str, Any] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        parser = _FAULT_FIELDS.get(name)
        if not sep or parser is None:
            known = ", ".join(_FAULT_FIELDS)
            raise ValueError(
                f"invalid simulator fault {item!r}: expected name=value with name one of {known}"
            )
        try:
            values[name] = parser(raw.strip())
        except ValueError as exc:
            raise ValueError(f"invalid simulator fault {item!r}: {exc}") from None
    return Fault(**values) if values else NO_FAULT


def _fault_spec(request: web.Request, payload: Any) -> str | None:
    """The fault text from the header, else the query, else the body: first non-empty wins."""
    spec = request.headers.get(FAULT_HEADER) or request.query.get(FAULT_FIELD)
    if spec:
        return spec
    if isinstance(payload, dict) and FAULT_FIELD in payload:
        value = payload[FAULT_FIELD]
        if not isinstance(value, str):
            raise ValueError(f"{FAULT_FIELD} must be a string")
        return value
    return None


# --- PNG images ---------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    # crc32 is chained rather than computed over kind + data so a 20 MB chunk is not copied.
    crc = zlib.crc32(data, zlib.crc32(kind))
    return b"".join((struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc)))


def _pattern_row(width: int, phase: int, tile: int) -> bytes:
    """One scanline of 2-bit palette indices: tiles of the four palette colours, shifted by
    ``phase`` so the next band of tiles is offset and the picture reads as a checkerboard."""
    indices = [((x // tile) + phase) % 4 for x in range(width)]
    indices += [0] * (-width % 4)
    return bytes(
        (indices[i] << 6) | (indices[i + 1] << 4) | (indices[i + 2] << 2) | indices[i + 3]
        for i in range(0, len(indices), 4)
    )


@lru_cache(maxsize=32)
def render_png(width: int, height: int) -> bytes:
    """A valid ``width`` x ``height`` PNG of a four-colour tile pattern, a few KB even at 4K.

    Two bits per pixel and the PNG "Up" filter make every row inside a band of tiles all zeros,
    so zlib sees long runs: a 4096x4096 image costs about 10 ms and 4 KB instead of the ~100 ms
    and 60 KB an RGB image would.
    """
    tile = max(1, min(width, height) // 8)
    row_bytes = (width + 3) // 4
    same_as_above = b"\x02" + bytes(row_bytes)  # filter type 2 ("Up") with zero deltas
    rows = {phase: b"\x00" + _pattern_row(width, phase, tile) for phase in range(4)}
    compressor = zlib.compressobj(6)
    parts = []
    for band_start in range(0, height, tile):
        parts.append(compressor.compress(rows[(band_start // tile) % 4]))
        repeats = min(tile, height - band_start) - 1
        if repeats:
            parts.append(compressor.compress(same_as_above * repeats))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 2, 3, 0, 0, 0)  # 2-bit, palette
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", _PALETTE),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        )
    )


@lru_cache(maxsize=8)
def padded_png(width: int, height: int, b64_bytes: int) -> bytes:
    """``render_png`` grown to about ``b64_bytes`` of base64 with random bytes in a private
    ancillary chunk. Random, so no layer of compression in between can shrink it and hide a
    size problem."""
    png = render_png(width, height)
    padding = b64_bytes * 3 // 4 - len(png) - 12
    if padding <= 0:
        return png
    pad = _png_chunk(_PAD_CHUNK, random.randbytes(padding))
    return b"".join((png[:_IHDR_END], pad, png[_IHDR_END:]))


@lru_cache(maxsize=8)
def png_base64(width: int, height: int, b64_bytes: int) -> bytes:
    """The base64 of ``padded_png``, cached because encoding 8 MB per response would otherwise
    dominate the benchmark."""
    return base64.b64encode(padded_png(width, height, b64_bytes))


def parse_size(size: Any) -> tuple[int, int]:
    """``"WxH"`` or a preset to (width, height); ``InvalidRequest`` for anything else."""
    if size is None:
        return DEFAULT_SIZE
    if not isinstance(size, str):
        raise InvalidRequest("size must be a string such as 1024x1024 or 2K", "size")
    preset = SIZE_PRESETS.get(size.upper())
    if preset:
        return preset, preset
    match = _SIZE_RE.match(size.strip().lower())
    if match is None:
        raise InvalidRequest(f"size {size!r} is not WxH or one of 1K, 2K, 3K, 4K", "size")
    width, height = int(match[1]), int(match[2])
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise InvalidRequest(f"size {size!r} is too large", "size")
    return width, height


# --- Generation requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """A validated generation request: what to draw and how to return it."""

    width: int
    height: int
    count: int
    response_format: str


def _positive_int(value: Any, param: str, high: int) -> int:
    # bool is an int subclass; the upstream rejects true/false as a count.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidRequest(f"{param} must be an integer between 1 and {high}", param)
    return value


def _image_count(payload: dict[str, Any]) -> int:
    if payload.get("sequential_image_generation") == "auto":
        options = payload.get("sequential_image_generation_options") or {}
        if not isinstance(options, dict):
            raise InvalidRequest(
                "sequential_image_generation_options must be an object", "sequential_image_generation_options"
            )
        max_images = options.get("max_images", MAX_SEQUENTIAL_IMAGES)
        return _positive_int(
            max_images, "sequential_image_generation_options.max_images", MAX_SEQUENTIAL_IMAGES
        )
    n = payload.get("n")
    return 1 if n is None else _positive_int(n, "n", MAX_IMAGES)


def parse_job(payload: Any) -> Job:
    """Validate as lightly as the upstream does: the fields the simulator needs, nothing else."""
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object", None)
    for name in ("model", "prompt"):
        if not isinstance(payload.get(name), str):
            raise InvalidRequest(f"{name} is required and must be a string", name)
    response_format = payload.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        raise InvalidRequest("response_format must be url or b64_json", "response_format")
    width, height = parse_size(payload.get("size"))
    return Job(width, height, _image_count(payload), response_format)


def _image_id(job: Job, image_bytes: int) -> str:
    # The id carries everything needed to redraw the image, so serving it needs no storage.
    return f"{job.width}x{job.height}-{image_bytes}-{random.getrandbits(48):012x}"


def _success_body(request: web.Request, job: Job, count: int, image_bytes: int) -> list[bytes]:
    """The 200 body as a list of byte strings to send one after the other.

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
        base = f"{request.scheme}://{request.host}/images/"
        data = [{"url": f"{base}{_image_id(job, image_bytes)}.png", "size": size} for _ in range(count)]
        return [head, orjson.dumps(data)[1:-1], tail]
    b64 = png_base64(job.width, job.height, image_bytes)
    item_tail = b'","size":"' + size.encode() + b'"}'
    parts = [head]
    for index in range(count):
        parts += (b',{"b64_json":"' if index else b'{"b64_json":"', b64, item_tail)
    parts.append(tail)
    return parts


async def _send(
    request: web.Request, parts: list[bytes], content_type: str = "application/json"
) -> web.StreamResponse:
    """Answer 200 with ``parts`` concatenated, copying at most ``_SEND_CHUNK`` bytes at a time.

    Small bodies go out as one ordinary response. Large ones are streamed with a
    Content-Length, so each connection holds one chunk, not its own copy of a many-MB body,
    and a slow reader applies back-pressure instead of growing a buffer.
    """
    total = sum(map(len, parts))
    if total <= _SEND_CHUNK:
        return web.Response(body=b"".join(parts), content_type=content_type)
    response = web.StreamResponse()
    response.content_type = content_type
    response.content_length = total
    await response.prepare(request)
    try:
        for chunk in _rechunk(parts, _SEND_CHUNK):
            await response.write(chunk)
    except ConnectionError:
        # The client went away mid-body; aiohttp handles the rest quietly.
        pass
    return response


def _rechunk(parts: list[bytes], size: int) -> Iterator[bytes]:
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


def _garbage_response(request: web.Request, kind: str, status: int) -> web.Response:
    if kind == "html":
        return web.Response(status=status, text="<html>oops</html>", content_type="text/html")
    base = f"{request.scheme}://{request.host}"
    cut = f'{{"created": {int(time.time())}, "data": [{{"url": "{base}/im'
    return web.Response(status=status, body=cut.encode(), content_type="application/json")


def _drop(request: web.Request) -> web.Response:
    """Close the connection with nothing written.

    The returned response is never sent: aiohttp's attempt to write it to the closed transport
    raises a ConnectionError, which it treats as a client that went away and stays quiet about.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


# --- Recording ----------------------------------------------------------------------------------


_Entry = tuple[str, str, tuple[tuple[bytes, bytes], ...], bytes, float]


class Recorder:
    """The last ``limit`` generation calls, kept raw: converting to JSON happens only when a
    test asks, so recording costs the benchmark next to nothing."""

    def __init__(self, limit: int = RECORD_LIMIT) -> None:
        self.count = 0
        self.entries: deque[_Entry] = deque(maxlen=limit)

    def add(self, request: web.Request, body: bytes) -> None:
        self.count += 1
        self.entries.append((request.method, request.raw_path, request.raw_headers, body, time.time()))

    def clear(self) -> None:
        self.count = 0
        self.entries.clear()

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "requests": [self._describe(*e) for e in self.entries]}

    @staticmethod
    def _describe(
        method: str, path: str, raw_headers: tuple[tuple[bytes, bytes], ...], body: bytes, received_at: float
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for raw_name, raw_value in raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "method": method,
            "path": path,
            "headers": headers,
            "body_b64": base64.b64encode(body).decode("ascii"),
            "received_at": received_at,
        }


# --- The application ----------------------------------------------------------------------------


@dataclass(slots=True)
class SimulatorState:
    """Per-application settings and recording."""

    api_key: str | None
    latency: float
    recorder: Recorder = field(default_factory=Recorder)

    def authorized(self, headers: Mapping[str, str]) -> bool:
        if self.api_key is None:
            return True
        return headers.get("Authorization", "") == f"Bearer {self.api_key}"


STATE = web.AppKey("simulator_state", SimulatorState)


def _parse_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


async def generations(request: web.Request) -> web.StreamResponse:
    """``POST /v1/images/generations``: record, authenticate, apply faults, then generate."""
    state = request.app[STATE]
    body = await request.read()
    state.recorder.add(request, body)
    if not state.authorized(request.headers):
        return _json_response(401, error_envelope(401))

    payload = _parse_body(body)
    try:
        spec = _fault_spec(request, payload)
        fault = parse_fault(spec) if spec else NO_FAULT
    except ValueError as exc:
        return _invalid(str(exc), FAULT_FIELD)

    wait = state.latency if fault.delay is None else fault.delay
    if wait > 0:
        await asyncio.sleep(wait)

    if fault.drop:
        return _drop(request)
    status = fault.forced_status
    if fault.garbage is not None:
        return _garbage_response(request, fault.garbage, status or 200)
    if status is not None:
        return _json_response(status, error_envelope(status, fault.code))

    try:
        job = parse_job(payload)
    except InvalidRequest as exc:
        return _invalid(str(exc), exc.param)
    count = job.count if fault.images is None else fault.images
    return await _send(request, _success_body(request, job, count, fault.image_bytes or 0))


async def image(request: web.Request) -> web.StreamResponse:
    """``GET /images/{id}.png``: redraw the image the id describes (size and padding)."""
    match = _IMAGE_ID_RE.match(request.match_info["image_id"])
    if match is not None:
        width, height, image_bytes = int(match[1]), int(match[2]), int(match[3])
        if (
            width <= MAX_SIDE
            and height <= MAX_SIDE
            and width * height <= MAX_PIXELS
            and image_bytes <= MAX_IMAGE_BYTES
        ):
            png = padded_png(width, height, image_bytes)
            return await _send(request, [png], content_type="image/png")
    not_found = {"message": "image not found", "type": "invalid_request_error", "code": "not_found"}
    return _json_response(404, {"error": not_found})


async def recorded_requests(request: web.Request) -> web.Response:
    """``GET /_simulator/requests``: what the simulator received, for tests."""
    return _json_response(200, request.app[STATE].recorder.snapshot())


async def reset(request: web.Request) -> web.Response:
    """``POST /_simulator/reset``: forget recorded calls."""
    request.app[STATE].recorder.clear()
    return _json_response(200, {"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    return _json_response(200, {"status": "ok"})


def create_app(api_key: str | None = None, latency: float = 0.0) -> web.Application:
    """The simulator as an aiohttp application.

    ``api_key`` None accepts any caller; ``latency`` is the wait, in seconds, before every
    generation call answers.
    """
    if latency < 0 or not math.isfinite(latency):
        raise ValueError("latency must be a non-negative number of seconds")
    app = web.Application(client_max_size=MAX_REQUEST_BODY)
    app[STATE] = SimulatorState(api_key=api_key or None, latency=latency)
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_get("/images/{image_id}.png", image)
    app.router.add_get("/_simulator/requests", recorded_requests)
    app.router.add_post("/_simulator/reset", reset)
    app.router.add_get("/healthz", healthz)
    return app


# --- Running it ---------------------------------------------------------------------------------


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve(host: str, port: int, api_key: str | None, latency: float) -> None:
    # Access logs off: at 1,000 concurrent requests, formatting log lines costs more than
    # answering. A short shutdown timeout: in-flight calls are only simulated work.
    runner = web.AppRunner(
        create_app(api_key, latency), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        # A deep accept backlog, so a burst of 1,000 connections is not met with SYN retries
        # that would show up as one-second stalls in the benchmark.
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound_port = runner.addresses[0][1] if runner.addresses else port
        print(
            f"simulator listening on http://{_display_host(host)}:{bound_port}", file=sys.stderr, flush=True
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                pass
        await stop.wait()
    finally:
        await runner.cleanup()


def run(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    latency: float = 0.0,
) -> None:
    """Serve until SIGTERM or SIGINT. Prints ``simulator listening on http://host:port`` to
    stderr once the port is bound, so scripts can wait for that line (port 0 picks a free port
    and the line shows which)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(_serve(host, port, api_key, latency))
        except KeyboardInterrupt:
            # A second Ctrl-C, or one before the handlers are installed.
            pass


def _non_negative_seconds(value: str) -> float:
    try:
        return _seconds(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            str(exc) if "between" in str(exc) else f"not a number: {value!r}"
        ) from None


def _port(value: str) -> int:
    try:
        return _int_in(0, 65535)(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {value!r}") from None


_HELP_DESCRIPTION = """\
Run a local stand-in for the upstream image API (POST /v1/images/generations):
same request and response shapes, real PNG images, and failures on request.
Recorded calls: GET /_simulator/requests; forget them: POST /_simulator/reset."""

_HELP_EPILOG = """\
faults, per request, as name=value pairs separated by commas, given as the
header x-simulator-fault, else the query parameter simulator_fault, else the
JSON body field "simulator_fault" (the one that passes through the gateway):
  status=CODE      answer CODE (400-599) with an upstream-style error envelope
  code=STRING      the envelope's error code (alone: a 400, e.g. content safety)
  delay=SECONDS    wait this long first, instead of --latency
  drop=1           close the connection without answering
  garbage=1        answer an HTML page; garbage=truncated: cut-off JSON
  images=K         return exactly K images
  image_bytes=B    make each image about B bytes of base64
example: x-simulator-fault: status=500,delay=1"""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``gateway simulate-upstream`` / ``python -m gateway.simulator``."""
    parser = argparse.ArgumentParser(
        prog="gateway simulate-upstream",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_HELP_DESCRIPTION,
        epilog=_HELP_EPILOG,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require `Authorization: Bearer KEY` like the upstream; default: accept any key",
    )
    parser.add_argument(
        "--latency",
        type=_non_negative_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before answering each generation call, as a real image model would (default 0)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        run(host=args.host, port=args.port, api_key=args.api_key, latency=args.latency)
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
