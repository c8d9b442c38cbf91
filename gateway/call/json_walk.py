"""An incremental walk of one JSON object, chunk by chunk, holding nothing of what it crosses.

The scans of an upstream's answers are built on it: a large images answer (gateway/call/answer_scan.py)
and the data of each server-sent event (gateway/call/sse.py). Either may be hundreds of MB of
base64 that must reach the caller as it arrives, so they are read as they go by, never parsed
whole. A subclass says what each value means through the hooks (``_value``, ``_closed``,
``_string_value``, ``_captured``) and captures the few short values it needs (``_start_capture``).

Strings, where almost all the bytes are, are crossed with ``bytes.find`` (one memchr per chunk);
only the structure between strings is walked byte by byte. The structure is checked (brackets,
commas, colons, numbers, literals, escapes, and a nesting depth of at most ``MAX_DEPTH``); with
``strict_strings`` so are control characters inside strings. UTF-8 is not: the caller's own parser
still checks it, since it gets the same bytes. What the walk holds is bounded whatever the input:
a frame per open container up to ``MAX_DEPTH``, a member name up to ``NAME_LIMIT``, a number or
literal up to ``_TOKEN_LIMIT`` and the one value being captured up to its own limit.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

NAME_LIMIT = 256  # member names compared with ours; longer ones cannot be ours
# Containers open at once, the top object included: orjson's own bound, so a buffered answer and a
# streamed one are refused alike. Without it a hostile answer of nested brackets made the scan
# hold an object per bracket, hundreds of MB for a few MB of answer.
MAX_DEPTH = 1024

_WS = frozenset(b" \t\r\n")
_TOKEN_CHARS = frozenset(b"0123456789+-.eEtruefalsn")
_TOKEN = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_ESCAPES = frozenset(b'"\\/bfnrtu')
_CONTROL = bytes(range(0x20))
_TOKEN_LIMIT = 512

# What a frame (an open object or array) is: the top object, or a subclass's own roles from 1 on.
TOP, OTHER = 0, -1
# What a frame expects next.
_KEY_OR_END, _KEY, _COLON, _VALUE, _VALUE_OR_END, _COMMA_OR_END = range(6)


class Malformed(Exception):
    """Not a JSON object (or it breaks off): nothing in it can be trusted."""


class Frame:
    __slots__ = ("is_object", "expect", "role", "key", "entry")

    def __init__(self, is_object: bool, role: int) -> None:
        self.is_object = is_object
        self.expect = _KEY_OR_END if is_object else _VALUE_OR_END
        self.role = role
        self.key: bytes | None = None  # the member being read (objects)
        self.entry: dict[bytes, Any] | None = None  # what a subclass notes of this container


class JsonWalk:
    """Feed one JSON object's chunks in order; each ``feed`` returns the bytes to send on.

    What comes back is the input, byte for byte, except a value captured with ``held``: it is
    held until it ends, and replaced by what ``_captured`` returns. :class:`Malformed` is raised
    as soon as anything is wrong; ``done`` says whether the object has ended.
    """

    def __init__(self, *, strict_strings: bool = False) -> None:
        self.done = False
        self._strict_strings = strict_strings
        self._stack: list[Frame] = []
        self._in_string = False
        self._escape = False
        self._string_len = 0
        self._string_name: bytearray | None = None  # raw bytes of a member name being read
        self._token: bytearray | None = None
        # The one value being captured, from where in the current chunk, at which depth.
        self._capture: bytearray | None = None
        self._capture_from = 0
        self._capture_depth = 0
        self._capture_limit = 0
        self._capture_held = False  # held back from the output until it ends
        self._capture_spoiled = False  # longer than its limit: what was kept cannot be trusted
        self._out_from = 0
        self._out: list[bytes] = []
        self._chunk, self._at = b"", 0  # where the value being opened starts

    # -- what a subclass says ---------------------------------------------------------------------

    def _value(self, parent: Frame, c: int) -> int:
        """A value starting with byte ``c`` opens in ``parent`` (its member ``parent.key``, if an
        object): the role of the container it opens, if it opens one."""
        return OTHER

    def _opened(self, frame: Frame) -> None:
        """A container has opened (its frame is on the stack)."""

    def _closed(self, frame: Frame) -> None:
        """A container has ended."""

    def _string_value(self, parent: Frame, length: int) -> None:
        """A string value of ``length`` raw bytes has ended in ``parent``."""

    def _captured(self, raw: bytes | None, parent: Frame | None) -> bytes | None:
        """A captured value has ended, in ``parent``: its raw bytes (None: past its limit). For a
        held capture, what to send in its place."""
        return raw

    # -- the public side ----------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[bytes]:
        self._out, self._out_from, self._capture_from = [], 0, 0
        self._scan(chunk)
        if self._capture is not None:
            self._append_capture(chunk, len(chunk))
        if not (self._capture is not None and self._capture_held) and self._out_from < len(chunk):
            self._out.append(chunk[self._out_from :] if self._out_from else chunk)
        return self._out

    def _start_capture(self, limit: int, *, held: bool = False) -> None:
        """From ``_value``: capture the value that opens, up to ``limit`` bytes."""
        chunk, i = self._chunk, self._at
        if held:
            if self._out_from < i:
                self._out.append(chunk[self._out_from : i])
            self._out_from = i
        self._capture, self._capture_from, self._capture_limit = bytearray(), i, limit
        self._capture_depth, self._capture_held, self._capture_spoiled = len(self._stack), held, False

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
            if self.done or c != 0x7B:  # '{'
                raise Malformed("not a single JSON object")
            self._stack.append(Frame(True, TOP))  # the first frame: no depth to check yet
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

    def _open_value(self, chunk: bytes, i: int, c: int, parent: Frame) -> None:
        self._chunk, self._at = chunk, i  # for _start_capture called from the hook
        child = self._value(parent, c)
        if c == 0x7B or c == 0x5B:
            if len(self._stack) >= MAX_DEPTH:
                raise Malformed(f"nested deeper than {MAX_DEPTH} levels")
            frame = Frame(c == 0x7B, child)
            self._stack.append(frame)
            self._opened(frame)
        elif c == 0x22:
            self._open_string(name=False)
        elif c in _TOKEN_CHARS:
            self._token = bytearray((c,))
        else:
            raise Malformed("expected a value")

    def _close(self, chunk: bytes, i: int) -> None:
        frame = self._stack.pop()
        self._closed(frame)
        if not self._stack:
            self.done = True
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
            raw = None if self._capture_spoiled else bytes(self._capture)
            held, self._capture = self._capture_held, None
            replacement = self._captured(raw, self._stack[-1] if self._stack else None)
            if held:
                self._out.append(replacement or b"")
                self._out_from = end

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
        # translate() deleting them runs at memory speed, several times a regex search's.
        if self._strict_strings and len(chunk[start:end].translate(None, _CONTROL)) != end - start:
            raise Malformed("a control character in a string")
        self._string_len += end - start
        name = self._string_name
        if name is not None and len(name) <= NAME_LIMIT:
            name += chunk[start:end]

    def _string_closed(self, chunk: bytes, end: int) -> None:
        name, self._string_name = self._string_name, None
        if name is not None:  # a member name: which one, escapes decoded as a parser would
            self._stack[-1].key = _member_name(bytes(name))
            return
        self._string_value(self._stack[-1], self._string_len)
        self._value_ended(chunk, end)

    # -- captures -----------------------------------------------------------------------------

    def _append_capture(self, chunk: bytes, end: int) -> None:
        capture = self._capture
        assert capture is not None
        if len(capture) + end - self._capture_from > self._capture_limit:
            self._capture_spoiled = True
        if not self._capture_spoiled:
            capture += chunk[self._capture_from : end]
        self._capture_from = end


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
