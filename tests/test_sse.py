"""The event-stream reader counts what a caller's parser reads, however the stream is cut into pieces.

The reference here reads a whole stream the way the standard says (WHATWG HTML, server-sent
events: lines end with CRLF, LF or CR; a blank line dispatches; data lines join with LF; an event
cut off by the end of the stream is dropped) and counts each event's JSON data with orjson. The
reader, fed the same bytes in any pieces, must agree, and look at each byte a bounded number of
times.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.call.log import CallLog
from gateway.call.sse import COMPLETED, FAILED, SUCCEEDED, EventReader


def reference(raw: bytes) -> tuple[int, dict[str, int], int | None, bool]:
    """images, failed codes, upstream images, ended: as a caller's parser reads ``raw``."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = re.split(rb"\r\n|\r|\n", raw)
    lines.pop()  # what follows the last line end is not a line yet
    images, failed, upstream, ended = 0, {}, None, False
    data: list[bytes] = []
    for line in lines:
        if not line:
            if data:
                joined = b"\n".join(data)
                if joined.strip() == b"[DONE]":
                    ended = True
                else:
                    try:
                        event = orjson.loads(joined)
                    except orjson.JSONDecodeError:
                        event = None
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind == SUCCEEDED:
                        images += 1
                    elif kind == FAILED:
                        error = event.get("error")
                        code = error.get("code") if isinstance(error, dict) else None
                        name = code if isinstance(code, str) and code else "unknown"
                        failed[name] = failed.get(name, 0) + 1
                    elif kind == COMPLETED:
                        usage = event.get("usage")
                        generated = usage.get("generated_images") if isinstance(usage, dict) else None
                        if type(generated) is int:
                            upstream = generated
                        ended = True
            data = []
            continue
        field, colon, value = line.partition(b":")
        if not colon:
            field, value = line, b""
        elif value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
    return images, failed, upstream, ended


def read(raw: bytes, cuts: list[int]) -> tuple[int, dict[str, int], int | None, bool]:
    call = CallLog(request_id="r", started=0.0)
    reader, start = EventReader(call), 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        reader.feed(raw[start:cut])
        start = cut
    return call.images, call.failed_images, call.upstream_images, reader.ended


def agree(raw: bytes, cuts: list[int]) -> None:
    assert read(raw, cuts) == reference(raw), (raw, cuts)


def event(data: Any, end: bytes = b"\n", name: str | None = None) -> bytes:
    head = b"event: " + name.encode() + end if name else b""
    return head + b"data: " + orjson.dumps(data) + end + end


STREAM = [
    event({"type": SUCCEEDED, "image_index": 0, "url": "https://x/0"}, name=SUCCEEDED),
    event({"type": FAILED, "error": {"code": "OutputImageSensitiveContentDetected"}}, b"\r\n"),
    b": a comment\r" + event({"url": "u", "type": SUCCEEDED}, b"\r"),  # the type last
    b'data: {"type": "image_generation.partial_succeeded",\ndata:  "url": "x"}\n\n',  # two data lines
    b'data: {"type": "image_generation.partial_succeeded", "url": "x\ndata: y"}\n\n',  # a string split: none
    b'data:{"type":"image_generation.partial_succeeded"}\n\n',  # no space after the colon
    b'data: {"type": "image_generation.partial_succeeded"} x\n\n',  # not JSON: nothing
    b'datum: {"type": "image_generation.partial_succeeded"}\n\n',  # not a data line
    b'data: {"type": "image_generation.partial_succeeded", "type": "other"}\n\n',  # the last counts
    event({"type": COMPLETED, "usage": {"generated_images": 3}}),
    b"data: [DONE]\n\n",
    b'data: {"type": "image_generation.partial_succeeded"}\n',  # never dispatched: dropped
]


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_every_split_of_a_stream_agrees_with_the_standard(bom: bytes) -> None:
    raw = bom + b"".join(STREAM)
    assert reference(raw) == (4, {"OutputImageSensitiveContentDetected": 1}, 3, True)
    for cut in range(len(raw) + 1):
        agree(raw, [cut])
    agree(raw, list(range(len(raw))))  # one byte at a time


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_each_line_end_is_a_line_end(end: bytes) -> None:
    raw = b"".join(event({"type": SUCCEEDED, "url": f"u{i}"}, end, SUCCEEDED) for i in range(3))
    raw += event({"type": COMPLETED, "usage": {"generated_images": 3}}, end)
    assert read(raw, list(range(0, len(raw), 7))) == (3, {}, 3, True)


def test_a_huge_event_is_read_in_one_pass() -> None:
    image = "A" * (16 * 1024 * 1024)
    raw = event({"type": SUCCEEDED, "b64_json": image}) + event({"type": COMPLETED})
    call = CallLog(request_id="r", started=0.0)
    reader = EventReader(call)
    for at in range(0, len(raw), 64 * 1024):
        reader.feed(raw[at : at + 64 * 1024])
    assert (call.images, reader.ended) == (1, True)
    assert reader.examined <= 3 * len(raw) + 1024, reader.examined  # LF, CR, then the data walk


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b'data: {"type": "x"}\n\n',
        b"event: a\n",
        b"event: a\r",
        b"event: a\r\n",
        b"data: {",
        b"data: {\r",
    ],
)
def test_what_ends_a_cut_leaves_the_next_event_standing_alone(sent: bytes) -> None:
    """Whatever the cut left open, the closing bytes end it: an event after them is read whole."""
    reader = EventReader(CallLog(request_id="r", started=0.0))
    reader.feed(sent)
    after = event({"type": SUCCEEDED, "url": "u"})
    raw = sent + reader.closing() + after
    assert reference(raw)[0] == 1, raw  # a data line left open would spoil the next event's data


line_end = st.sampled_from([b"\n", b"\r", b"\r\n"])
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6))
event_data = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from([SUCCEEDED, FAILED, COMPLETED, "other"])},
        optional={
            "url": st.text(max_size=5),
            "error": st.one_of(json_leaf, st.fixed_dictionaries({"code": json_leaf})),
            "usage": st.one_of(json_leaf, st.fixed_dictionaries({"generated_images": json_leaf})),
        },
    ).map(orjson.dumps),
    st.just(b"[DONE]"),
    st.binary(max_size=12),
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        end = draw(line_end)
        if draw(st.booleans()):
            parts.append(b": comment" + end)
        data = draw(event_data)
        if draw(st.booleans()) and len(data) > 2:  # split over two data lines
            parts.append(b"data: " + data[:2] + end + b"data:" + data[2:] + end)
        else:
            parts.append(b"data: " + data + end)
        if draw(st.booleans()):
            parts.append(end)  # dispatch
    return b"".join(parts)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(streams(), st.lists(st.integers(0, 400), max_size=8))
def test_any_stream_in_any_pieces_agrees_with_the_standard(raw: bytes, cuts: list[int]) -> None:
    agree(raw, [c for c in cuts if c <= len(raw)])
