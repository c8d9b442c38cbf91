"""A local stand-in for the upstream image API (gogogotoken's OpenAI-compatible endpoint).

The simulator answers ``POST /v1/images/generations`` the way the upstream does (same request
fields, same response and error shapes), returns real PNG or JPEG images (or streams them as
server-sent events), and can be told per request to misbehave. The gateway's tests, ``make run``
and the benchmark all run against it, so nobody needs a paid upstream key to develop, test or
load-test the gateway.

Run it::

    gateway simulate-upstream --port 9001 --api-key sk-sim --latency 2 --stream-gap 0.5
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
    ``output_format`` ``png`` (default) or ``jpeg`` chooses the image format. The answer is
    ``{"model", "created", "data", "usage": {"generated_images", "output_tokens",
    "total_tokens"}}``; a failed entry of a set is ``{"error": {"code", "message"}}`` in its place.
    ``"stream": true`` answers server-sent events instead: ``image_generation.partial_succeeded``
    (or ``partial_failed``) per entry, ``stream_gap`` seconds apart, then
    ``image_generation.completed`` with the usage, then ``data: [DONE]``.
    Every other field (``image``, ``seed``, ``watermark``, ...) is accepted and ignored.
    Invalid input gets a 400 ``{"error": {"message", "type": "invalid_request_error", "param",
    "code": "InvalidParameter"}}``.

``GET /images/{id}.png``, ``GET /images/{id}.jpeg``
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
without blocking other calls (any number of concurrent calls at 2 s all finish after about 2 s).
``--stream-gap SECONDS`` (default 0.5) is the wait between a stream's image events.

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
  behind ``url`` items). The PNG carries incompressible padding in a private ancillary chunk (a
  JPEG in comment segments), so it stays a valid image of the requested size.
- ``fail_images=I,J,...`` or ``fail_images=all``: those entries (indices from 0; the bare items
  after ``fail_images`` are more indices) are failed entries, or ``partial_failed`` events;
  ``usage`` counts only the images. ``fail_code=CODE`` sets their code (default
  ``OutputImageSensitiveContentDetected``).
- ``usage_images=N``: ``usage`` claims N images (and their tokens) whatever was made, so a
  disagreement can be tested; ``usage_images=none`` leaves ``usage`` out.
- ``stream_gap=SECONDS``: the wait between a stream's image events, instead of ``--stream-gap``.
- ``break_after=K``: a stream's connection is dropped after K events (0: right after the
  headers); the client sees an unfinished chunked body.
- ``stall_after=K`` with ``stall=SECONDS`` (default an hour): a stream goes quiet after K events
  for that long, then goes on.

Faults act after the key check and after the wait. ``drop`` wins over ``status`` and
``garbage``, which win over the normal answer (the body is then not validated), so they refuse a
stream before it starts. A malformed fault (unknown name, bad value), or one that cannot apply to
the call (an index past the set, ``break_after`` on a call that does not stream), gets a 400
whose ``param`` is ``simulator_fault``, so a typo in a test fails loudly instead of silently
testing the happy path.

Modules
-------

``limits`` (defaults and bounds), ``errors`` (the upstream's error bodies), ``faults`` (parsing a
fault), ``jobs`` (reading a request), ``png`` and ``jpeg`` (drawing images), ``images`` (the one
the request asked for), ``answers`` (what a call produces, and the 200 body), ``stream`` (the
same as server-sent events), ``responses`` (writing answers on the wire), ``recorder`` (what was
received), ``app`` (routes and handlers), ``command`` (the command line and server loop). This
package re-exports what other code uses, so callers import from ``gateway.simulator`` alone.
"""

import importlib
from typing import Any

# Where each name lives. Imported when first used (PEP 562), so that importing the package, or a
# light module of it (arguments.py), does not import the server and aiohttp.
_EXPORTS = {
    "STATE": "app",
    "SimulatorState": "app",
    "create_app": "app",
    "build_parser": "arguments",
    "main": "command",
    "run": "command",
    "InvalidRequest": "errors",
    "error_envelope": "errors",
    "NO_FAULT": "faults",
    "Fault": "faults",
    "parse_fault": "faults",
    "Job": "jobs",
    "parse_job": "jobs",
    "parse_size": "jobs",
    "DEFAULT_HOST": "limits",
    "DEFAULT_PORT": "limits",
    "FAULT_FIELD": "limits",
    "FAULT_HEADER": "limits",
    "padded_png": "png",
    "png_base64": "png",
    "render_png": "png",
    "Recorder": "recorder",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.simulator' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gateway.simulator.{module}"), name)


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "FAULT_FIELD",
    "FAULT_HEADER",
    "NO_FAULT",
    "STATE",
    "Fault",
    "InvalidRequest",
    "Job",
    "Recorder",
    "SimulatorState",
    "build_parser",
    "create_app",
    "error_envelope",
    "main",
    "padded_png",
    "parse_fault",
    "parse_job",
    "parse_size",
    "png_base64",
    "render_png",
    "run",
]
