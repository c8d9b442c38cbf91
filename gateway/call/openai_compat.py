"""Keeping the upstream's success body valid under OpenAI's published ImagesResponse schema.

The upstream (Seedream) may add ``usage: {"generated_images", "output_tokens", "total_tokens"}``,
while OpenAI's schema requires ``input_tokens`` and ``input_tokens_details`` in any ``usage``.
When that happens the missing fields are added, and only the ``usage`` object is rewritten: the
rest of the body, multi-MB base64 images included, is copied as it came, never re-serialised.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

QUICK_SPLICE_BYTES = 16 * 1024  # answers up to this size are verified by parsing the result
_REQUIRED_INT = ("input_tokens", "output_tokens", "total_tokens")


def conform_images_body(body: bytes, payload: dict[str, Any]) -> bytes:
    """The body to send to the caller: unchanged unless its ``usage`` must be completed."""
    usage = payload.get("usage")
    if usage is None or usage_conforms(usage):
        return body
    completed_usage = complete_usage(usage)
    completed = orjson.dumps(completed_usage)
    if len(body) <= QUICK_SPLICE_BYTES:
        spliced = _quick_splice(body, usage, completed, {**payload, "usage": completed_usage})
        if spliced is not None:
            return spliced
    span = top_level_value_span(body, b"usage")
    if span is None:  # cannot happen for a body orjson parsed; keep the upstream's bytes
        return body
    start, end = span
    return body[:start] + completed + body[end:]


def _quick_splice(body: bytes, usage: Any, completed: bytes, expected: dict[str, Any]) -> bytes | None:
    """The body with ``usage`` replaced, found by its own text, or None to walk the structure.

    A small answer (URL images) is searched for its usage member written compactly or with
    Python's default separators, the two ways a JSON encoder writes it unprompted; the result
    is kept only if it parses to exactly the answer with the completed usage (a lookalike inside
    a string fails that). It spares the usual small answer the structural walk.
    """
    for name, write in ((b'"usage":', orjson.dumps), (b'"usage": ', _python_json)):
        value = write(usage)
        at = body.rfind(name + value)  # the last: a repeated name counts as in orjson
        if at < 0:
            continue
        start = at + len(name)
        spliced = body[:start] + completed + body[start + len(value) :]
        try:
            same = orjson.loads(spliced) == expected
        except orjson.JSONDecodeError:
            same = False
        return spliced if same else None
    return None


def _python_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def usage_conforms(usage: Any) -> bool:
    if not isinstance(usage, dict):
        return False
    if not all(type(usage.get(name)) is int for name in _REQUIRED_INT):
        return False
    details = usage.get("input_tokens_details")
    return isinstance(details, dict) and all(
        type(details.get(k)) is int for k in ("text_tokens", "image_tokens")
    )


def complete_usage(usage: Any) -> dict[str, Any]:
    """The upstream's usage with OpenAI's required fields added (zeros where it says nothing)."""
    fixed: dict[str, Any] = dict(usage) if isinstance(usage, dict) else {}
    for name in ("input_tokens", "output_tokens"):
        if type(fixed.get(name)) is not int:
            fixed[name] = 0
    if type(fixed.get("total_tokens")) is not int:
        fixed["total_tokens"] = fixed["input_tokens"] + fixed["output_tokens"]
    details = fixed.get("input_tokens_details")
    if not isinstance(details, dict):
        details = {}
    fixed["input_tokens_details"] = {
        "text_tokens": details.get("text_tokens") if type(details.get("text_tokens")) is int else 0,
        "image_tokens": details.get("image_tokens") if type(details.get("image_tokens")) is int else 0,
    }
    output_details = fixed.get("output_tokens_details")
    if output_details is not None and not (
        isinstance(output_details, dict)
        and all(type(output_details.get(k)) is int for k in ("text_tokens", "image_tokens"))
    ):
        del fixed["output_tokens_details"]
    return fixed


def top_level_value_span(body: bytes, name: bytes) -> tuple[int, int] | None:
    """Byte span of the value of member ``name`` of the top-level object of a valid JSON body
    (of its last occurrence, should the name be repeated: the one a parser keeps).

    Jumps from quote to quote with ``bytes.find``, so a 20 MB base64 string costs one memchr,
    not a Python loop over its characters. Structure outside strings is counted per segment.
    """
    key = b'"' + name + b'"'
    depth, pos, size = 0, 0, len(body)
    value_start: int | None = None
    found: tuple[int, int] | None = None  # the last one: a repeated name counts as in orjson
    while pos < size:
        quote = body.find(b'"', pos)
        segment = body[pos:] if quote == -1 else body[pos:quote]
        if value_start is not None:
            end = _close_at_depth(segment, depth, pos)
            if end is not None:
                found, value_start, depth, pos = (value_start, end), None, 1, end
                continue
        depth += segment.count(b"{") + segment.count(b"[") - segment.count(b"}") - segment.count(b"]")
        if quote == -1:
            return found
        closing = _string_end(body, quote)
        if value_start is None and depth == 1 and body[quote : closing + 1] == key:
            colon = body.find(b":", closing + 1)
            value_start = colon + 1
            while body[value_start : value_start + 1] in (b" ", b"\t", b"\n", b"\r"):
                value_start += 1
            pos = value_start
            continue
        pos = closing + 1
    return found


def _close_at_depth(segment: bytes, depth: int, offset: int) -> int | None:
    """Where, in a string-free segment, the member value that began at ``depth`` 1 ends."""
    for index, char in enumerate(segment):
        if char in b"{[":
            depth += 1
        elif char in b"}]":
            depth -= 1
            if depth == 1:  # closed the member's own object or array
                return offset + index + 1
            if depth == 0:  # closed the top-level object right after a scalar member
                return _trim_end(segment, index, offset)
        elif char == 44 and depth == 1:  # ','
            return _trim_end(segment, index, offset)
    return None


def _trim_end(segment: bytes, index: int, offset: int) -> int:
    while index > 0 and segment[index - 1 : index] in (b" ", b"\t", b"\n", b"\r"):
        index -= 1
    return offset + index


def _string_end(body: bytes, quote: int) -> int:
    """Index of the quote closing the string that opens at ``quote`` (escapes honoured)."""
    pos = quote + 1
    while True:
        end = body.find(b'"', pos)
        backslashes = 0
        while body[end - 1 - backslashes] == 92:  # '\\'
            backslashes += 1
        if backslashes % 2 == 0:
            return end
        pos = end + 1
