"""Step 2: is the body a call the gateway can price? Read with a size limit, then checked by hand
(it runs on every call).

Only the fields the gateway prices or must refuse are checked; every other field (the Seedream
extras: image, seed, guidance_scale, watermark, ...) passes through untouched, since the caller's
bytes are forwarded as they came. The upstream's own limits (minimum pixels and the like) stay the
upstream's: its 400 reaches the caller as a 400. :class:`ImageGenerationRequest` is only the
schema /docs shows.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect, Request

from gateway.core import errors
from gateway.core.errors import bad_request

JSON_TYPES = ("application/json", "text/json")


async def read_json_body(request: Request, limit: int, timeout_s: float) -> tuple[bytes, Any]:
    """The raw body (at most ``limit`` bytes, else 413) and its parsed JSON (else 400/415).

    The whole body must arrive within ``timeout_s`` (else 408): without a deadline a client that
    trickles a byte now and then holds its connection and memory for as long as it likes.
    A client that hangs up mid-body gets :func:`errors.client_closed` (logged in one line).
    """
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() not in JSON_TYPES:
        raise errors.unsupported_media_type()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.payload_too_large(limit)
    try:
        async with asyncio.timeout(timeout_s):
            body = await _read_limited(request, limit)
    except TimeoutError:
        raise errors.body_timeout(timeout_s) from None
    except ClientDisconnect:
        raise errors.client_closed() from None
    try:
        return body, orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.bad_request("The request body is not valid JSON.") from None


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.payload_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_call(
    request: Request, max_body_bytes: int, max_prompt_chars: int, timeout_s: float
) -> tuple[ImageCall, bytes]:
    """The validated call and the caller's bytes, which are forwarded as they are."""
    body, payload = await read_json_body(request, max_body_bytes, timeout_s)
    return validate_image_request(payload, max_prompt_chars), body


MAX_N = 10
MAX_SIDE = 16384
MAX_SEQUENTIAL_IMAGES = 15
SIZE_PRESETS = frozenset({"1K", "2K", "3K", "4K"})
_SIZE_RE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
MAX_USER_CHARS = 256
# Control characters (C0, DEL, C1): written as regex escapes, the same in Python and in the
# JSON Schema (ECMA-262) pattern of /docs.
USER_CONTROL_PATTERN = r"[\x00-\x1f\x7f-\x9f]"
_USER_CONTROL_RE = re.compile(USER_CONTROL_PATTERN)


@dataclass(frozen=True)
class ImageCall:
    """What the gateway needs to know of a valid request."""

    model: str
    n: int
    max_images: int  # the most images the call can return: what is reserved
    stream: bool = False  # server-sent events, one per image (gateway/call/stream.py)
    user: str = ""  # OpenAI's end-user id, for the ledger; "" when absent (forwarded as sent)


def validate_image_request(payload: Any, max_prompt_chars: int) -> ImageCall:
    """Check a parsed body; raise a 400 :class:`GatewayError` naming the bad parameter."""
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", "model")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad_request("'prompt' is required and must be a non-empty string.", "prompt")
    if len(prompt) > max_prompt_chars:
        raise bad_request(f"'prompt' is longer than {max_prompt_chars} characters.", "prompt")
    n = _check_n(payload.get("n"))
    _check_size(payload.get("size"))
    response_format = payload.get("response_format")
    if response_format is not None and response_format not in ("url", "b64_json"):
        raise bad_request("'response_format' must be 'url' or 'b64_json'.", "response_format")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false.", "stream")
    max_images = max(n, _sequential_max_images(payload))
    return ImageCall(model, n, max_images, stream=stream is True, user=_check_user(payload.get("user")))


def _check_n(n: Any) -> int:
    if n is None:  # OpenAI's schema makes n nullable, and the SDKs send null for n=None
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise bad_request(f"'n' must be an integer from 1 to {MAX_N}.", "n")
    return n


def _check_size(size: Any) -> None:
    if size is None:
        return
    if not isinstance(size, str):
        raise bad_request("'size' must be a string like '1024x1024' or a preset like '2K'.", "size")
    if size.upper() in SIZE_PRESETS:
        return
    match = _SIZE_RE.fullmatch(size)
    if not match or not all(1 <= int(side) <= MAX_SIDE for side in match.groups()):
        raise bad_request(
            f"'size' must be WIDTHxHEIGHT with sides from 1 to {MAX_SIDE}, or one of "
            f"{', '.join(sorted(SIZE_PRESETS))}.",
            "size",
        )


def _check_user(user: Any) -> str:
    """OpenAI's end-user id: recorded in the ledger, so bounded and free of control characters.
    Absent, null and "" (which OpenAI accepts) all mean no user."""
    if user is None or user == "":
        return ""
    if not isinstance(user, str) or len(user) > MAX_USER_CHARS:
        raise bad_request(f"'user' must be a string of at most {MAX_USER_CHARS} characters.", "user")
    if _USER_CONTROL_RE.search(user):
        raise bad_request("'user' must not contain control characters.", "user")
    return user


def _sequential_max_images(payload: dict[str, Any]) -> int:
    """With sequential generation on, one call may return up to max_images (15 by default)."""
    mode = payload.get("sequential_image_generation")
    if mode is None or mode == "disabled":
        return 1
    if mode != "auto":
        raise bad_request(
            "'sequential_image_generation' must be 'auto' or 'disabled'.",
            "sequential_image_generation",
        )
    options = payload.get("sequential_image_generation_options") or {}
    if not isinstance(options, dict):
        raise bad_request(
            "'sequential_image_generation_options' must be an object.",
            "sequential_image_generation_options",
        )
    max_images = options.get("max_images", MAX_SEQUENTIAL_IMAGES)
    if isinstance(max_images, bool) or not isinstance(max_images, int):
        max_images = -1
    if not 1 <= max_images <= MAX_SEQUENTIAL_IMAGES:
        raise bad_request(
            f"'sequential_image_generation_options.max_images' must be an integer from 1 to "
            f"{MAX_SEQUENTIAL_IMAGES}.",
            "sequential_image_generation_options",
        )
    return max_images


_SIDE = "(?:[1-9][0-9]{0,3}|1[0-5][0-9]{3}|16[0-2][0-9]{2}|163[0-7][0-9]|1638[0-4])"  # 1 to 16384


class ImageGenerationRequest(BaseModel):
    """The request as documented in /docs (validation itself is the function above).

    Kept as strict as the validator, no looser: a body this schema calls valid must not be
    refused by the gateway (the upstream may still refuse it, e.g. too few pixels).
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, examples=["doubao-seedream-4-5-251128"])
    # One character that is not whitespace as the validator's str.strip() sees it: JSON Schema's
    # (ECMAScript's) \s leaves out U+001C-U+001F and U+0085, which Python strips.
    prompt: str = Field(
        min_length=1, max_length=32000, pattern=r"[^\s\x1c-\x1f\x85]", examples=["一只在雪地里奔跑的柴犬"]
    )
    n: int | None = Field(default=1, ge=1, le=MAX_N, description="Written without a fraction: 4, not 4.0.")
    size: str | None = Field(
        default=None,
        pattern=f"^({_SIDE}x{_SIDE}|[1-4][Kk])$",
        description=f"WIDTHxHEIGHT, each side 1 to {MAX_SIDE}, or a preset 1K to 4K.",
        examples=["1024x1024", "2K"],
    )
    response_format: Literal["url", "b64_json"] | None = None
    stream: bool | None = Field(
        default=None,
        description="true: server-sent events, one per image as it is made (Seedream 4.0 and 4.5).",
    )
    sequential_image_generation: Literal["auto", "disabled"] | None = None
    # "not" a pattern found anywhere, rather than an anchored pattern: "$" also matches before a
    # final newline in Python's regexes, so "^...$" would let "alice\n" through the schema.
    user: str | None = Field(
        default=None,
        max_length=MAX_USER_CHARS,
        json_schema_extra={"not": {"type": "string", "pattern": USER_CONTROL_PATTERN}},
        description="An id of the end user, recorded in the ledger (exports) and forwarded; "
        f"at most {MAX_USER_CHARS} characters, no control characters. Empty means none.",
        examples=["user-1234"],
    )
    # A plain dict with its properties spelled out: a nested model would put a "$defs" reference
    # in the schema that does not resolve once embedded in the OpenAPI document.
    sequential_image_generation_options: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={
            "properties": {"max_images": {"type": "integer", "minimum": 1, "maximum": MAX_SEQUENTIAL_IMAGES}},
            "description": "max_images: how many images at most (an integer written without a fraction).",
        },
    )
