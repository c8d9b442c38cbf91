"""Server-sent events counted as they stream by, in one pass, holding nothing of their bodies.

The upstream's event stream is relayed to the caller piece by piece, as it arrives; this reader
sees the same pieces and counts what a caller's parser will read: one charged image per
``image_generation.partial_succeeded`` event, a failed entry per ``partial_failed`` (by its error
code), the ``completed`` event's ``usage.generated_images``, and whether the stream ended
(``completed`` or ``data: [DONE]``).

Lines are read as the standard says (WHATWG HTML, "Server-sent events"): they end with CRLF, LF
or CR alone; a blank line dispatches the event; ``data`` lines are joined with LF; an event counts
only once dispatched, so one cut off by the end of the stream is not charged, as a caller's parser
drops it too. Every byte is looked at a bounded number of times (``examined`` counts them), so
relaying is linear in the stream's size however large one event is; and an event's data is read
by an incremental JSON walk (gateway/call/json_walk.py) that keeps only its ``type``, ``error``
and ``usage``, never its base64 image.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.call.json_walk import TOP, Frame, JsonWalk, Malformed
from gateway.call.log import CallLog, count_failure

SUCCEEDED = "image_generation.partial_succeeded"
FAILED = "image_generation.partial_failed"
COMPLETED = "image_generation.completed"

_FIELD_LIMIT = 16  # "data", "event", "id", "retry": a longer field name is none of them
# An event's data up to this size is kept and parsed whole by orjson when the event ends (the
# usual event: a URL, or a failed image); a larger one (a base64 image) is walked as it arrives.
SMALL_DATA = 64 * 1024
_BOM = b"\xef\xbb\xbf"
# What an event's data keeps, at most: its type (a short string), a failed image's error, the usage.
_CAPTURES = {b"type": 256, b"error": 16 * 1024, b"usage": 64 * 1024}


class EventData(JsonWalk):
    """The data of one event, read as it goes by: its top-level ``type``, ``error`` and ``usage``.

    Strings are checked for control characters: data lines are joined with LF, and a string
    broken across two of them is not JSON to the caller's parser, so the event counts for nothing.
    """

    def __init__(self) -> None:
        super().__init__(strict_strings=True)
        self.members: dict[bytes, Any] = {}

    def _value(self, parent: Frame, c: int) -> int:
        limit = _CAPTURES.get(parent.key or b"") if parent.role == TOP else None
        if limit is not None:
            self._start_capture(limit)
        return super()._value(parent, c)

    def _captured(self, raw: bytes | None, parent: Frame | None) -> bytes | None:
        if parent is not None and parent.role == TOP and parent.key in _CAPTURES:
            try:  # the last of a repeated member counts, as in orjson
                self.members[parent.key] = None if raw is None else orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.members[parent.key] = None
        return raw


def _find(piece: bytes, byte: int, start: int, end: int) -> int:
    """Where ``byte`` is next in ``piece[start:end]``, else ``end``."""
    at = piece.find(byte, start, end)
    return end if at < 0 else at


class EventReader:
    """Feed the stream's pieces in order; the counts go into ``call``.

    ``ended`` is set once the stream said it is complete; ``closing`` says what ends the line and
    event the bytes seen so far stop in, so a relay that must cut the stream can first end what
    the caller's parser is in the middle of.
    """

    def __init__(self, call: CallLog) -> None:
        self.call = call
        self.ended = False
        self.examined = 0  # bytes looked at, all passes together: stays within a few times the input
        self._started = False  # past a byte-order mark, if any
        self._bom = b""
        self._after_cr = False  # the last line ended with CR: an LF right after it belongs to it
        self._at_line_start = True
        self._field: bytearray | None = bytearray()  # the line's field name; None once past it
        self._space = False  # the value's first byte, if a space, is skipped
        self._in_data = False  # the line is a data line: its value goes to the event's data
        self._data_lines = 0  # data lines of the event so far
        self._data_line_open = False  # bytes of the current data line's value were fed
        self._small: bytearray | None = bytearray()  # the event's data while it is small
        self._data: EventData | None = None  # its walk, once it is not
        self._event_lines = 0

    @property
    def mid_line(self) -> bool:
        return not self._at_line_start

    @property
    def mid_event(self) -> bool:
        return self._event_lines > 0 or not self._at_line_start

    def closing(self) -> bytes:
        """What ends the line and the event the bytes so far leave open (nothing if none is), so
        that what a relay sends next is an event of its own to the caller's parser. After a CR,
        an LF would only complete a CRLF: one more is needed."""
        if not self.mid_event:
            return b""
        return (b"\n" if self._after_cr else b"") + (b"\n" if self.mid_line else b"") + b"\n"

    def feed(self, piece: bytes) -> None:
        if not self._started:
            piece = self._skip_bom(piece)
        i, n = 0, len(piece)
        if self._after_cr and i < n:
            self._after_cr = False
            if piece[0] == 0x0A:  # the LF of a CRLF split across two pieces
                i = 1
        # The next LF and the next CR, each found once (memchr) and kept until passed: one pass
        # over the piece for each, however many lines it holds.
        lf = cr = -1
        while i < n:
            if lf < i:
                lf = _find(piece, 0x0A, i, n)
                self.examined += lf - i
            if cr < i:
                cr = _find(piece, 0x0D, i, n)
                self.examined += cr - i
            end = min(lf, cr)
            if end > i:
                self._line_bytes(piece, i, end)
            if end == n:
                return
            self._line_ended()
            i = end + 1
            if piece[end] == 0x0D:  # CR: a CRLF counts as one line end
                if i < n:
                    if piece[i] == 0x0A:
                        i += 1
                else:
                    self._after_cr = True

    def _skip_bom(self, piece: bytes) -> bytes:
        """Drop a leading byte-order mark, which may itself arrive in pieces."""
        held = self._bom + piece if self._bom else piece
        if len(held) < len(_BOM) and _BOM.startswith(held):
            self._bom = held
            return b""
        self._started, self._bom = True, b""
        return held[len(_BOM) :] if held.startswith(_BOM) else held

    # -- one line ----------------------------------------------------------------------------------

    def _line_bytes(self, piece: bytes, start: int, end: int) -> None:
        self._at_line_start = False
        field = self._field
        if field is not None:
            colon = piece.find(b":", start, end)
            stop = end if colon < 0 else colon
            if len(field) + stop - start <= _FIELD_LIMIT:
                field += piece[start:stop]
            else:
                self._field = None  # no field we know: ignore the rest of the line
                self._in_data = False
                field = None
            if colon < 0 or field is None:
                return
            self._field = None
            self._in_data = field == b"data"
            self._space = True
            start = colon + 1
        if not self._in_data or start >= end:
            return
        if self._space:
            self._space = False
            if piece[start] == 0x20:
                start += 1
                if start >= end:
                    return
        self._data_bytes(piece[start:end])

    def _line_ended(self) -> None:
        if self._at_line_start:
            self._dispatch()
            return
        field = self._field
        if field is not None and field == b"data":  # "data" with no colon: an empty data line
            self._in_data = True
        if self._in_data:
            self._data_line_ended()
        self._event_lines += 1
        self._at_line_start, self._field, self._in_data, self._space = True, bytearray(), False, False

    # -- the event's data ----------------------------------------------------------------------------

    def _data_bytes(self, value: bytes) -> None:
        """Bytes of a data line's value (a line may arrive in several pieces)."""
        if not self._data_line_open:
            self._data_line_open = True
            if self._data_lines:
                self._feed_data(b"\n")  # the LF that joins two data lines
        self._feed_data(value)

    def _data_line_ended(self) -> None:
        if not self._data_line_open and self._data_lines:
            self._feed_data(b"\n")  # an empty data line between two others
        self._data_lines += 1
        self._data_line_open = False

    def _feed_data(self, value: bytes) -> None:
        self.examined += len(value)
        small = self._small
        if small is not None:
            small += value
            if len(small) <= SMALL_DATA:
                return
            self._small, self._data, value = None, EventData(), bytes(small)  # too large to keep
        if self._data is not None:
            try:
                self._data.feed(value)
            except Malformed:
                self._data = None  # not JSON: nothing in it is counted

    def _dispatch(self) -> None:
        small, data, had_data = self._small, self._data, self._data_lines > 0
        self._small, self._data, self._data_lines, self._event_lines = bytearray(), None, 0, 0
        if not had_data:
            return
        if small is not None:
            if small.strip() == b"[DONE]":
                self.ended = True
                return
            try:
                document = orjson.loads(small)
            except orjson.JSONDecodeError:
                return
            if isinstance(document, dict):
                self._count({name: document.get(name.decode()) for name in _CAPTURES})
        elif data is not None and data.done:
            self._count(data.members)

    def _count(self, members: dict[bytes, Any]) -> None:
        call, kind = self.call, members.get(b"type")
        if kind == SUCCEEDED:
            call.images += 1
        elif kind == FAILED:
            error = members.get(b"error")
            code = error.get("code") if isinstance(error, dict) else None
            count_failure(call.failed_images, code if isinstance(code, str) and code else "unknown")
        elif kind == COMPLETED:
            usage = members.get(b"usage")
            generated = usage.get("generated_images") if isinstance(usage, dict) else None
            if type(generated) is int:
                call.upstream_images = generated
            self.ended = True
