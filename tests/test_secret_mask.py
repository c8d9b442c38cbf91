"""The master key is masked however JSON spells it, in a whole body and across a stream's pieces.

A JSON parser decodes ``\\u0073k\\u002d...`` (any character as ``\\uXXXX``, hex in either case; ``/``
also as ``\\/``) to the same string as the raw key: masking the raw bytes alone let it through.
"""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.secret_mask import Masker, SecretPattern, Secrets

SECRET_CHARS = "abcXYZ019-_/"
FILLER_CHARS = "qrstvw .,"  # nothing of the secret, no backslash: the key can only be where it was put


@st.composite
def spelled(draw: st.DrawFn, secret: str) -> str:
    """``secret`` as it may appear inside a JSON string: each character raw or escaped."""
    out = []
    for char in secret:
        how = draw(st.sampled_from(["raw", "lower", "upper", "short"]))
        if how == "raw" or (how == "short" and char != "/"):
            out.append(char)
        elif how == "short":
            out.append("\\/")
        else:
            hexa = f"{ord(char):04x}"
            out.append("\\u" + (hexa.upper() if how == "upper" else hexa))
    return "".join(out)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, str, str, list[int]]:
    secret = draw(st.text(alphabet=SECRET_CHARS, min_size=4, max_size=16))
    before = draw(st.text(alphabet=FILLER_CHARS, max_size=20))
    after = draw(st.text(alphabet=FILLER_CHARS, max_size=20))
    return secret, before, draw(spelled(secret)), after, draw(st.lists(st.integers(0, 200), max_size=6))


def masked_stream(pattern: SecretPattern, raw: bytes, cuts: list[int]) -> bytes:
    masker, out, start = Masker(pattern), [], 0
    for cut in [*sorted({c for c in cuts if c <= len(raw)}), len(raw)]:
        out.append(masker.feed(raw[start:cut]))
        start = cut
    return b"".join(out) + masker.flush()


@settings(max_examples=400, deadline=None)
@given(cases())
def test_any_spelling_of_the_key_in_any_pieces_is_masked_and_nothing_else_changes(
    case: tuple[str, str, str, str, list[int]],
) -> None:
    secret, before, spelling, after, cuts = case
    pattern = SecretPattern(secret)
    raw = b'{"note": "' + (before + spelling + after).encode() + b'"}'
    assert orjson.loads(raw)["note"] == before + secret + after  # what the caller would decode
    for out in (pattern.mask(raw), masked_stream(pattern, raw, cuts)):
        assert orjson.loads(out)["note"] == before + "***" + after, out


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=SECRET_CHARS, min_size=4, max_size=16),
    st.binary(max_size=300),
    st.lists(st.integers(0, 300)),
)
def test_bytes_without_the_key_pass_unchanged(secret: str, data: bytes, cuts: list[int]) -> None:
    pattern = SecretPattern(secret)
    decoded = data.decode("latin-1")
    if secret in decoded or "\\" in decoded:  # keep to bytes where the key cannot be spelled
        return
    assert pattern.mask(data) == data
    assert masked_stream(pattern, data, cuts) == data


def test_a_piece_without_an_escape_is_passed_on_as_it_came() -> None:
    pattern = SecretPattern("test-master-0123")
    piece = b"A" * (256 * 1024)
    assert Masker(pattern).feed(piece) is piece
    assert pattern.mask(b"x test-master-0123 y \\u0074est-master-0123") == b"x *** y ***"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"up-abcab", b"up-", b"ab", b"c", b"x", b"up-abcabcab"]), max_size=12),
    st.lists(st.integers(0, 200), max_size=6),
)
def test_the_master_key_is_masked_wherever_the_chunks_split_it(parts: list[bytes], cuts: list[int]) -> None:
    secret = b"up-abcabcab"  # overlaps itself: the hard case for a held-back tail
    raw, masker, out, start = b"".join(parts), Masker(SecretPattern(secret.decode())), [], 0
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
    """Two channels' keys: each is masked in a whole body and in a stream, wherever a piece ends,
    and nothing else is."""
    keys = ("up-abcabcab", "ark-xark-x")
    secrets, raw, out, start = Secrets(keys), b"".join(parts), [], 0
    maskers = secrets.masker()
    for cut in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
        out.append(maskers.feed(raw[start:cut]))
        start = cut
    out.append(maskers.flush())
    expected = raw.replace(keys[0].encode(), b"***").replace(keys[1].encode(), b"***")
    assert b"".join(out) == expected
    assert secrets.mask(raw) == expected
    assert secrets.redact(raw.decode()) == expected.decode()
