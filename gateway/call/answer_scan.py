"""An incremental scan of an upstream 200 answer: count its images as the bytes go by.

A large answer (Seedream: up to 15 images of 4K as base64, hundreds of MB) is streamed to the
caller instead of being buffered and parsed, so memory per call does not grow with its size. This
scanner reads the top-level JSON object chunk by chunk, with no copy of the answer: it finds the
``data`` array and classifies each entry with the rules of gateway/call/forward.py count_images
(an image has a non-empty ``url`` or ``b64_json`` string; anything else is a failed entry, named
by its ``error.code``), and it holds back the (small) top-level ``usage`` value to complete it for
OpenAI's schema, as gateway/call/openai_compat.py does for a buffered answer.

Strings, where almost all the bytes are, are crossed with ``bytes.find`` (one memchr per chunk);
only the structure between strings is walked byte by byte. The structure is checked (brackets,
commas, colons, numbers, literals, escapes, and a nesting depth of at most ``MAX_DEPTH``); the
characters inside strings are not (control characters, UTF-8), which the caller's own parser still
checks, since it gets the same bytes. What the scan holds is bounded whatever the answer: a frame
per open container up to ``MAX_DEPTH``, and the few short values it captures.
Duplicate names behave as in orjson: the last ``data`` counts.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.call.openai_compat import complete_usage, usage_conforms

USAGE_LIMIT = 64 * 1024  # a usage object is a few dozen bytes; larger is not an honest answer
ERROR_LIMIT = 16 * 1024  # a failed entry's error object, parsed for its code; beyond: "unknown"
NAME_LIMIT = 256  # member names compared with ours; longer ones cannot be ours
# Containers open at once, the top object included: orjson's own bound, so a buffered answer and a
# streamed one are refused alike. Without it a hostile answer of nested brackets made the scan
# hold an object per bracket, hundreds of MB for a few MB of answer.
MAX_DEPTH = 1024

_WS = frozenset(b" \t\r\n")
_TOKEN_CHARS = frozenset(b"0123456789+-.eEtruefalsn")
_TOKEN = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_ESCAPES = frozenset(b'"\\/bfnrtu')
_TOKEN_LIMIT = 512

# What a frame (an open object or array) is, for the counting.
_TOP, _DATA, _ENTRY, _OTHER = range(4)
# What a frame expects next.
_KEY_OR_END, _KEY, _COLON, _VALUE, _VALUE_OR_END, _COMMA_OR_END = range(6)
_IMAGE_FIELDS = (b"url", b"b64_json")


class Malformed(Exception):
    """The answer is not a JSON object (or breaks off): no images can be trusted from it."""


class _Frame:
    __slots__ = ("is_object", "expect", "role", "key", "entry")

    def __init__(self, is_object: bool, role: int) -> None:
        self.is_object = is_object
        self.expect = _KEY_OR_END if is_object else _VALUE_OR_END
        self.role = role
        self.key: bytes | None = None  # the member being read (objects)
        self.entry: dict[bytes, Any] = {}  # for a data entry: url/b64_json -> non-empty, error -> bytes


class ImagesScanner:
    """Feed the answer's chunks in order; each ``feed`` returns the bytes to send on.

    What comes back is the input, byte for byte, except the top-level ``usage`` value, which is
    held until it ends and then sent completed (only if OpenAI's schema needs it). ``finish``
    checks that the document ended; :class:`Malformed` is raised as soon as anything is wrong.
    """

    def __init__(self) -> None:
        self.images = 0
        self.failed_images: dict[str, int] = {}
        self.upstream_images: int | None = None
        self.has_data = False
        self._stack: list[_Frame] = []
        self._done = False
        self._in_string = False
        self._escape = False
        self._string_len = 0
        self._string_name: bytearray | None = None  # raw bytes of a member name being read
        self._token: bytearray | None = None
        self._field: bytes | None = None  # the entry's url/b64_json whose string is being read
        # A value being captured: usage (held back from the output) or an entry's error.
        self._capture: bytearray | None = None
        self._capture_from = 0
        self._capture_depth = 0
        self._capture_usage = False
        self._out_from = 0
        self._out: list[bytes] = []

    # -- the public side ----------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[bytes]:
        self._out, self._out_from, self._capture_from = [], 0, 0
        self._scan(chunk)
        if self._capture is not None:
            self._append_capture(chunk, len(chunk))
        if not (self._capture is not None and self._capture_usage) and self._out_from < len(chunk):
            self._out.append(chunk[self._out_from :] if self._out_from else chunk)
        return self._out

    def finish(self) -> None:
        """Raise :class:`Malformed` unless a whole object with a ``data`` array was read."""
        if not self._done:
            raise Malformed("the answer ended before its JSON object did")
        if not self.has_data:
            raise Malformed("the answer has no data array")

    # -- the walk -----------------------------------------------------------------------------

    def _scan(self, chunk: bytes) -> None:
        i, n = 0, len(chunk)
        while i < n:
            if self._in_string:
                i = self._string(chunk, i)
                continue
            c = chunk[i]
            if self._token is not None:
                if c in _TOKEN_CHARS:
                    j = i + 1
                    while j < n and chunk[j] in _TOKEN_CHARS:
                        j += 1
                    self._token += chunk[i:j]
                    if len(self._token) > _TOKEN_LIMIT:
                        raise Malformed("a number or literal too long")
                    i = j
                    continue
                self._end_token(chunk, i)
            if c in _WS:
                i += 1
                continue
            self._structure(chunk, i, c)
            i += 1

    def _structure(self, chunk: bytes, i: int, c: int) -> None:
        if not self._stack:
            if self._done or c != 0x7B:  # '{'
                raise Malformed("not a single JSON object")
            self._stack.append(_Frame(True, _TOP))  # the first frame: no depth to check yet
            return
        frame = self._stack[-1]
        expect = frame.expect
        if expect in (_KEY_OR_END, _KEY):
            if c == 0x22:  # '"'
                self._open_string(name=True)
                frame.expect = _COLON
            elif c == 0x7D and expect == _KEY_OR_END:  # '}'
                self._close(chunk, i)
            else:
                raise Malformed("expected a member name")
        elif expect == _COLON:
            if c != 0x3A:
                raise Malformed("expected ':'")
            frame.expect = _VALUE
        elif expect in (_VALUE, _VALUE_OR_END):
            if c == 0x5D and expect == _VALUE_OR_END:  # ']'
                self._close(chunk, i)
            else:
                frame.expect = _COMMA_OR_END
                self._open_value(chunk, i, c, frame)
        elif c == 0x2C:  # ','
            frame.expect = _KEY if frame.is_object else _VALUE
        elif c == (0x7D if frame.is_object else 0x5D):
            self._close(chunk, i)
        else:
            raise Malformed("expected ',' or the end of a container")

    def _open_value(self, chunk: bytes, i: int, c: int, parent: _Frame) -> None:
        role, key = parent.role, parent.key
        if role == _TOP and key == b"usage":
            self._start_capture(chunk, i, usage=True)
        elif role == _ENTRY and key == b"error" and c == 0x7B:
            self._start_capture(chunk, i, usage=False)
        if role == _TOP and key == b"data":
            self.has_data = c == 0x5B  # '['; a later "data" replaces an earlier one, as in orjson
            self.images, self.failed_images = 0, {}
        if role == _DATA and c != 0x7B:
            self._count_failed("unknown")
        if role == _ENTRY and key in _IMAGE_FIELDS:
            parent.entry[key] = False
            self._field = key if c == 0x22 else None
        if role == _ENTRY and key == b"error":
            parent.entry[b"error"] = None
        if c == 0x7B or c == 0x5B:
            child = _OTHER
            if role == _TOP and key == b"data" and c == 0x5B:
                child = _DATA
            elif role == _DATA and c == 0x7B:
                child = _ENTRY
            if len(self._stack) >= MAX_DEPTH:
                raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
            self._stack.append(_Frame(c == 0x7B, child))
        elif c == 0x22:
            self._open_string(name=False)
        elif c in _TOKEN_CHARS:
            self._token = bytearray((c,))
        else:
            raise Malformed("expected a value")

    def _close(self, chunk: bytes, i: int) -> None:
        frame = self._stack.pop()
        if frame.role == _ENTRY:
            self._classify(frame.entry)
        if not self._stack:
            self._done = True
        self._value_ended(chunk, i + 1)

    def _end_token(self, chunk: bytes, end: int) -> None:
        token, self._token = self._token, None
        if token is None or not _TOKEN.fullmatch(token):
            raise Malformed("not a number or literal")
        self._value_ended(chunk, end)

    def _value_ended(self, chunk: bytes, end: int) -> None:
        """A value ended just before ``end``: finish its capture if it was the captured one."""
        if self._capture is not None and len(self._stack) == self._capture_depth:
            self._append_capture(chunk, end)
            captured, usage, self._capture = bytes(self._capture), self._capture_usage, None
            if usage:
                self._out.append(self._usage_bytes(captured))
                self._out_from = end
            elif self._stack and self._stack[-1].role == _ENTRY:
                self._stack[-1].entry[b"error"] = captured

    # -- strings ------------------------------------------------------------------------------

    def _open_string(self, *, name: bool) -> None:
        self._in_string, self._escape, self._string_len = True, False, 0
        self._string_name = bytearray() if name else None

    def _string(self, chunk: bytes, i: int) -> int:
        """Cross a string from ``i``; the index after its closing quote, or the chunk's end."""
        n = len(chunk)
        while i < n:
            if self._escape:
                if chunk[i] not in _ESCAPES:
                    raise Malformed("a bad escape in a string")
                self._escape = False
                self._keep(chunk, i, i + 1)
                i += 1
                continue
            quote = chunk.find(b'"', i)
            backslash = chunk.find(b"\\", i, n if quote < 0 else quote)
            if backslash >= 0:
                self._keep(chunk, i, backslash + 1)
                self._escape = True
                i = backslash + 1
                continue
            if quote < 0:
                self._keep(chunk, i, n)
                return n
            self._keep(chunk, i, quote)
            self._in_string = False
            self._string_closed(chunk, quote + 1)
            return quote + 1
        return n

    def _keep(self, chunk: bytes, start: int, end: int) -> None:
        self._string_len += end - start
        name = self._string_name
        if name is not None and len(name) <= NAME_LIMIT:
            name += chunk[start:end]

    def _string_closed(self, chunk: bytes, end: int) -> None:
        name, self._string_name = self._string_name, None
        if name is not None:  # a member name: which one, escapes decoded as a parser would
            self._stack[-1].key = _member_name(bytes(name))
            return
        if self._field is not None:
            self._stack[-1].entry[self._field] = self._string_len > 0
            self._field = None
        self._value_ended(chunk, end)

    # -- captures and counting ----------------------------------------------------------------

    def _start_capture(self, chunk: bytes, i: int, *, usage: bool) -> None:
        if usage:
            if self._out_from < i:
                self._out.append(chunk[self._out_from : i])
            self._out_from = i
        self._capture, self._capture_from = bytearray(), i
        self._capture_depth, self._capture_usage = len(self._stack), usage

    def _append_capture(self, chunk: bytes, end: int) -> None:
        capture = self._capture
        assert capture is not None
        if len(capture) + end - self._capture_from > (USAGE_LIMIT if self._capture_usage else ERROR_LIMIT):
            if self._capture_usage:
                raise Malformed("a usage object too large")
            self._capture_from = end  # keep what fits: its code then reads as "unknown"
            return
        capture += chunk[self._capture_from : end]
        self._capture_from = end

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
        self._count_failed(code if isinstance(code, str) and code else "unknown")

    def _count_failed(self, code: str) -> None:
        self.failed_images[code] = self.failed_images.get(code, 0) + 1


def _member_name(raw: bytes) -> bytes | None:
    """The name as a parser reads it, if it can be one of ours (escapes such as ``\\u0075rl``)."""
    if len(raw) > NAME_LIMIT:
        return None
    if b"\\" not in raw:
        return raw
    try:
        decoded = orjson.loads(b'"' + raw + b'"')
    except orjson.JSONDecodeError:
        raise Malformed("a bad member name") from None
    return str(decoded).encode("utf-8", "surrogatepass")
