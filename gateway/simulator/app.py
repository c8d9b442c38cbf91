"""The simulator as an aiohttp application: its routes and their handlers."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator.answers import plan_answer, success_body
from gateway.simulator.errors import InvalidRequest, error_envelope
from gateway.simulator.faults import NO_FAULT, Fault, fault_spec, parse_fault
from gateway.simulator.images import CONTENT_TYPES, image_file
from gateway.simulator.jobs import parse_job
from gateway.simulator.limits import (
    DEFAULT_STREAM_GAP,
    FAULT_FIELD,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    MAX_REQUEST_BODY,
    MAX_SIDE,
)
from gateway.simulator.recorder import Recorder
from gateway.simulator.responses import drop, garbage_response, invalid_response, json_response, send
from gateway.simulator.stream import events, send_stream

_IMAGE_ID_RE = re.compile(r"([0-9]+)x([0-9]+)-([0-9]+)-[0-9a-f]+")


@dataclass(slots=True)
class SimulatorState:
    """Per-application settings and recording."""

    api_key: str | None
    latency: float
    stream_gap: float
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
        return json_response(401, error_envelope(401))

    payload = _parse_body(body)
    try:
        spec = fault_spec(request.headers, request.query, payload)
        fault = parse_fault(spec) if spec else NO_FAULT
    except ValueError as exc:
        return invalid_response(str(exc), FAULT_FIELD)

    wait = state.latency if fault.delay is None else fault.delay
    if wait > 0:
        await asyncio.sleep(wait)

    if fault.drop:
        return drop(request)
    status = fault.forced_status
    if fault.garbage is not None:
        return garbage_response(request, fault.garbage, status or 200)
    if status is not None:
        return json_response(status, error_envelope(status, fault.code))

    return await _answer(request, payload, fault)


async def _answer(request: web.Request, payload: Any, fault: Fault) -> web.StreamResponse:
    """The 200 answer, as JSON or as a stream, or the 400 of a request that cannot be run."""
    try:
        job = parse_job(payload)
    except InvalidRequest as exc:
        return invalid_response(str(exc), exc.param)
    try:
        plan = plan_answer(job, fault)
    except ValueError as exc:
        return invalid_response(str(exc), FAULT_FIELD)
    base_url = f"{request.scheme}://{request.host}"
    image_bytes = fault.image_bytes or 0
    if not job.stream:
        return await send(request, success_body(base_url, job, plan, image_bytes))
    gap = request.app[STATE].stream_gap if fault.stream_gap is None else fault.stream_gap
    answer = events(base_url, job, plan, image_bytes)
    return await send_stream(request, answer, len(plan.entries), gap, fault)


async def image(request: web.Request) -> web.StreamResponse:
    """``GET /images/{id}.png`` or ``.jpeg``: redraw the image the id describes (size, padding)."""
    match = _IMAGE_ID_RE.fullmatch(request.match_info["image_id"])
    if match is not None:
        width, height, image_bytes = int(match[1]), int(match[2]), int(match[3])
        if (
            width <= MAX_SIDE
            and height <= MAX_SIDE
            and width * height <= MAX_PIXELS
            and image_bytes <= MAX_IMAGE_BYTES
        ):
            output_format = request.match_info["format"]
            picture = image_file(output_format, width, height, image_bytes)
            return await send(request, [picture], content_type=CONTENT_TYPES[output_format])
    not_found = {"message": "image not found", "type": "invalid_request_error", "code": "not_found"}
    return json_response(404, {"error": not_found})


async def recorded_requests(request: web.Request) -> web.Response:
    """``GET /_simulator/requests``: what the simulator received, for tests."""
    return json_response(200, request.app[STATE].recorder.snapshot())


async def reset(request: web.Request) -> web.Response:
    """``POST /_simulator/reset``: forget recorded calls."""
    request.app[STATE].recorder.clear()
    return json_response(200, {"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


def create_app(
    api_key: str | None = None, latency: float = 0.0, stream_gap: float = DEFAULT_STREAM_GAP
) -> web.Application:
    """The simulator as an aiohttp application.

    ``api_key`` None accepts any caller; ``latency`` is the wait, in seconds, before every
    generation call answers (a stream: before its first event); ``stream_gap`` the wait between
    a stream's image events.
    """
    for name, value in (("latency", latency), ("stream_gap", stream_gap)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a non-negative number of seconds")
    app = web.Application(client_max_size=MAX_REQUEST_BODY)
    app[STATE] = SimulatorState(api_key=api_key or None, latency=latency, stream_gap=stream_gap)
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_get("/images/{image_id}.{format:png|jpeg}", image)
    app.router.add_get("/_simulator/requests", recorded_requests)
    app.router.add_post("/_simulator/reset", reset)
    app.router.add_get("/healthz", healthz)
    return app
