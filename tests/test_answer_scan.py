"""The incremental scanner agrees with the buffered path (orjson, count_images, the usage splice)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.call.answer_scan import ImagesScanner, Malformed
from gateway.call.forward import deliverable
from gateway.call.log import CallLog
from gateway.call.relay import Masker, Maskers


def buffered(raw: bytes) -> tuple[bytes | None, int, dict[str, int], int | None]:
    call = CallLog(request_id="r", started=0.0)
    body = deliverable(raw, call)
    return body, call.images, call.failed_images, call.upstream_images


def scanned(raw: bytes, cuts: list[int]) -> tuple[bytes, int, dict[str, int], int | None]:
    scanner, out, start = ImagesScanner(), [], 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        out += scanner.feed(raw[start:cut])
        start = cut
    scanner.finish()
    return b"".join(out), scanner.images, scanner.failed_images, scanner.upstream_images


def agree(raw: bytes, cuts: list[int]) -> None:
    expected = buffered(raw)
    assert expected[0] is not None
    assert scanned(raw, cuts) == expected


SMALL = [
    {"created": 1, "data": [{"url": "https://x/0.png"}]},
    {
        "data": [
            {"b64_json": "QUJD", "size": "1K"},
            {"error": {"code": "OutputImageRiskDetection", "m": 'a "q" {['}},
        ]
    },
    {"data": [], "usage": {"generated_images": 0}},
    {
        "data": [
            {"url": ""},
            {"b64_json": 3},
            7,
            None,
            [1, {"url": "x"}],
            {"error": "flat"},
            {"error": {"code": ""}},
        ]
    },
    {
        "usage": {
            "generated_images": 2,
            "input_tokens": 1,
            "output_tokens": 2,
            "total_tokens": 3,
            "input_tokens_details": {"text_tokens": 1, "image_tokens": 0},
        },
        "data": [{"url": 'a\\"b'}],
    },
    {"usage": None, "data": [{"nested": {"url": "no"}, "url": "yes"}], "x": [1.5e3, -0.0, True, False]},
    {"usage": [1, 2], "data": [{"error": {"code": 'C\u00e9"x', "deep": {"a": [{"b": "}"}]}}}]},
]


@pytest.mark.parametrize("document", SMALL)
def test_every_split_of_a_small_document_agrees_with_the_buffered_path(document: Any) -> None:
    for indent in (0, orjson.OPT_INDENT_2):
        raw = orjson.dumps(document, option=indent)
        for cut in range(len(raw) + 1):
            agree(raw, [cut])
        agree(raw, list(range(len(raw))))  # one byte at a time


def test_escaped_member_names_are_read_as_a_parser_reads_them() -> None:
    raw = b'{"d\\u0061ta": [{"\\u0075rl": "x"}, {"b64\\u005fjson": ""}], "usage": {"generated_images": 1}}'
    for cut in range(len(raw) + 1):
        agree(raw, [cut])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"data": 5}',
        b'{"created": 1}',
        b'{"data": [',
        b'{"data": []} x',
        b'{"data": [],}',
        b'{"data": [1 2]}',
        b'{"data": [tru]}',
        b'{"data": ["\\q"]}',
        b'{"data" [] }',
        b'{"data": []',
    ],
)
def test_what_is_not_an_images_answer_is_refused(raw: bytes) -> None:
    assert buffered(raw)[0] is None
    with pytest.raises(Malformed):
        scanned(raw, [len(raw) // 2])


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
entry = st.one_of(
    st.fixed_dictionaries(
        {"url": st.text(max_size=20)}, optional={"size": st.just("2048x2048"), "x": json_value}
    ),
    st.fixed_dictionaries(
        {"b64_json": st.one_of(st.text(max_size=40), json_leaf)}, optional={"extra": json_value}
    ),
    st.fixed_dictionaries(
        {
            "error": st.one_of(
                st.fixed_dictionaries(
                    {"code": st.one_of(st.text(max_size=20), json_leaf)},
                    optional={"message": st.text(max_size=30)},
                ),
                json_value,
            )
        }
    ),
    json_value,
)
usage = st.one_of(
    st.none(),
    json_value,
    st.fixed_dictionaries(
        {},
        optional={
            "generated_images": st.integers(0, 15),
            "output_tokens": st.integers(0, 9),
            "total_tokens": json_leaf,
            "input_tokens": st.integers(0, 9),
        },
    ),
)
document = st.fixed_dictionaries(
    {"data": st.lists(entry, max_size=6)},
    optional={
        "created": st.integers(0, 2**40),
        "usage": usage,
        "model": st.text(max_size=10),
        "other": json_value,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document, st.lists(st.integers(0, 4000), max_size=8), st.booleans())
def test_random_documents_split_anywhere_agree_with_orjson(
    doc: dict[str, Any], cuts: list[int], pretty: bool
) -> None:
    raw = orjson.dumps(doc, option=orjson.OPT_INDENT_2 if pretty else 0)
    agree(raw, [c % (len(raw) + 1) for c in cuts])


@settings(max_examples=100, deadline=None)
@given(document, st.integers(1, 10_000))
def test_a_random_document_cut_short_is_never_complete(doc: dict[str, Any], at: int) -> None:
    raw = orjson.dumps(doc)
    cut = raw[: at % len(raw)]
    with pytest.raises(Malformed):
        scanned(cut, [len(cut) // 3])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"up-abcab", b"up-", b"ab", b"c", b"x", b"up-abcabcab"]), max_size=12),
    st.lists(st.integers(0, 200), max_size=6),
)
def test_the_master_key_is_masked_wherever_the_chunks_split_it(parts: list[bytes], cuts: list[int]) -> None:
    secret = b"up-abcabcab"  # overlaps itself: the hard case for a held-back tail
    raw, masker, out, start = b"".join(parts), Masker(secret), [], 0
    for cut in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
        out.append(masker.feed(raw[start:cut]))
        start = cut
    out.append(masker.flush())
    assert b"".join(out) == raw.replace(secret, b"***")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"up-abcab", b"up-", b"ark-x", b"ark-", b"x", b"c", b"ab", b"up-abcabcab"]),
        max_size=14,
    ),
    st.lists(st.integers(0, 200), max_size=6),
)
def test_every_channels_key_is_masked_wherever_the_chunks_split_them(
    parts: list[bytes], cuts: list[int]
) -> None:
    """Two channels' keys: each is masked in a stream, wherever a chunk ends, and nothing else is."""
    keys = (b"up-abcabcab", b"ark-xark-x")
    raw, maskers, out, start = b"".join(parts), Maskers(keys), [], 0
    for cut in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
        out.append(maskers.feed(raw[start:cut]))
        start = cut
    out.append(maskers.flush())
    assert b"".join(out) == raw.replace(keys[0], b"***").replace(keys[1], b"***")
