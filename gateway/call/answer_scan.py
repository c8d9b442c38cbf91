"""An incremental scan of an upstream 200 answer: count its images as the bytes go by.

A large answer (Seedream: up to 15 images of 4K as base64, hundreds of MB) is streamed to the
caller instead of being buffered and parsed, so memory per call does not grow with its size. This
scanner reads the top-level JSON object chunk by chunk (gateway/call/json_walk.py), with no copy
of the answer: it finds the ``data`` array and classifies each entry with the rules of
gateway/call/forward.py count_images (an image has a non-empty ``url`` or ``b64_json`` string;
anything else is a failed entry, named by its ``error.code``), and it holds back the (small)
top-level ``usage`` value to complete it for OpenAI's schema, as gateway/call/openai_compat.py
does for a buffered answer. Duplicate names behave as in orjson: the last ``data`` counts.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.call.json_walk import MAX_DEPTH, OTHER, TOP, Frame, JsonWalk, Malformed
from gateway.call.log import count_failure
from gateway.call.openai_compat import complete_usage, usage_conforms

__all__ = ["MAX_DEPTH", "ImagesScanner", "Malformed"]

USAGE_LIMIT = 64 * 1024  # a usage object is a few dozen bytes; larger is not an honest answer
ERROR_LIMIT = 16 * 1024  # a failed entry's error object, parsed for its code; beyond: "unknown"

_DATA, _ENTRY = 1, 2  # the roles of the data array and of each of its entries
_IMAGE_FIELDS = (b"url", b"b64_json")


class ImagesScanner(JsonWalk):
    """Feed the answer's chunks in order; each ``feed`` returns the bytes to send on.

    What comes back is the input, byte for byte, except the top-level ``usage`` value, which is
    held until it ends and then sent completed (only if OpenAI's schema needs it). ``finish``
    checks that the document ended; :class:`Malformed` is raised as soon as anything is wrong.
    """

    def __init__(self) -> None:
        super().__init__()
        self.images = 0
        self.failed_images: dict[str, int] = {}
        self.upstream_images: int | None = None
        self.has_data = False
        self._field: bytes | None = None  # the entry's url/b64_json whose string is being read

    def finish(self) -> None:
        """Raise :class:`Malformed` unless a whole object with a ``data`` array was read."""
        if not self.done:
            raise Malformed("the answer ended before its JSON object did")
        if not self.has_data:
            raise Malformed("the answer has no data array")

    # -- what each value means -------------------------------------------------------------------

    def _value(self, parent: Frame, c: int) -> int:
        role, key = parent.role, parent.key
        if role == TOP and key == b"usage":
            self._start_capture(USAGE_LIMIT, held=True)
        elif role == _ENTRY and key == b"error" and c == 0x7B:
            self._start_capture(ERROR_LIMIT)
        if role == TOP and key == b"data":
            self.has_data = c == 0x5B  # '['; a later "data" replaces an earlier one, as in orjson
            self.images, self.failed_images = 0, {}
        if role == _DATA and c != 0x7B:
            count_failure(self.failed_images, "unknown")
        if role == _ENTRY:
            entry = parent.entry
            assert entry is not None
            if key in _IMAGE_FIELDS:
                entry[key] = False
                self._field = key if c == 0x22 else None
            if key == b"error":
                entry[b"error"] = None
        if role == TOP and key == b"data" and c == 0x5B:
            return _DATA
        if role == _DATA and c == 0x7B:
            return _ENTRY
        return OTHER

    def _opened(self, frame: Frame) -> None:
        if frame.role == _ENTRY:
            frame.entry = {}  # url/b64_json -> non-empty, error -> its raw bytes

    def _closed(self, frame: Frame) -> None:
        if frame.role == _ENTRY:
            self._classify(frame.entry or {})

    def _string_value(self, parent: Frame, length: int) -> None:
        if self._field is not None:
            assert parent.entry is not None
            parent.entry[self._field] = length > 0
            self._field = None

    def _captured(self, raw: bytes | None, parent: Frame | None) -> bytes | None:
        if self._capture_held:  # the usage
            if raw is None:
                raise Malformed("a usage object too large")
            return self._usage_bytes(raw)
        if parent is not None and parent.role == _ENTRY and parent.entry is not None:
            parent.entry[b"error"] = raw  # None when too large: its code then reads as "unknown"
        return raw

    # -- counting -------------------------------------------------------------------------------

    def _usage_bytes(self, raw: bytes) -> bytes:
        try:
            usage = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Malformed("an unreadable usage") from None
        generated = usage.get("generated_images") if isinstance(usage, dict) else None
        self.upstream_images = generated if type(generated) is int else None
        if usage is None or usage_conforms(usage):
            return raw
        return orjson.dumps(complete_usage(usage))

    def _classify(self, entry: dict[bytes, Any]) -> None:
        if any(entry.get(name) for name in _IMAGE_FIELDS):
            self.images += 1
            return
        code: Any = None
        raw = entry.get(b"error")
        if raw:
            try:
                error = orjson.loads(raw)
            except orjson.JSONDecodeError:
                error = None
            code = error.get("code") if isinstance(error, dict) else None
        count_failure(self.failed_images, code if isinstance(code, str) and code else "unknown")
