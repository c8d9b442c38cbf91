"""Reading a generation request: what to draw and how to return it, validated as the upstream does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.simulator.errors import InvalidRequest
from gateway.simulator.limits import (
    DEFAULT_SIZE,
    MAX_IMAGES,
    MAX_PIXELS,
    MAX_SEQUENTIAL_IMAGES,
    MAX_SIDE,
    SIZE_PRESETS,
)

_SIZE_RE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")


@dataclass(frozen=True, slots=True)
class Job:
    """A validated generation request: what to draw and how to return it."""

    model: str
    width: int
    height: int
    count: int
    response_format: str  # "url" or "b64_json"
    output_format: str  # "png" or "jpeg"
    stream: bool

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(size: Any) -> tuple[int, int]:
    """``"WxH"`` or a preset to (width, height); ``InvalidRequest`` for anything else."""
    if size is None:
        return DEFAULT_SIZE
    if not isinstance(size, str):
        raise InvalidRequest("size must be a string such as 1024x1024 or 2K", "size")
    preset = SIZE_PRESETS.get(size.upper())
    if preset:
        return preset, preset
    match = _SIZE_RE.fullmatch(size.strip().lower())
    if match is None:
        raise InvalidRequest(f"size {size!r} is not WxH or one of 1K, 2K, 3K, 4K", "size")
    width, height = int(match[1]), int(match[2])
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise InvalidRequest(f"size {size!r} is too large", "size")
    return width, height


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
    output_format = payload.get("output_format") or "png"
    if output_format not in ("png", "jpeg"):
        raise InvalidRequest("output_format must be png or jpeg", "output_format")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", "stream")
    width, height = parse_size(payload.get("size"))
    count = _image_count(payload)
    return Job(payload["model"], width, height, count, response_format, output_format, bool(stream))
