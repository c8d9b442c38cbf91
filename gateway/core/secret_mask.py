"""Masking a secret in bytes relayed from the upstream: raw, and as a JSON parser would decode it.

The upstream may echo the master key into what the gateway relays. Matching only its raw bytes is
not enough: in a JSON string any character may be written as ``\\uXXXX`` (hex digits in either
case), ``/`` also as ``\\/``, and the caller's parser turns ``sk\\u002d...`` back into the key. So a
:class:`SecretPattern` matches every way a JSON string can spell the secret, and replaces each
with ``***``; a :class:`Masker` does it across the pieces of a stream, holding back only an end
that may begin such a spelling.

Most bytes relayed are base64, which holds no backslash and none of a key's bytes outside its
alphabet (the ``-`` of ``sk-...``): the escaped forms are looked for only in a piece that holds a
backslash, the raw key only in one that holds such a byte, and each is ruled out by a memchr, so a
piece of base64 costs two memchr scans. A search for a two-byte mark such as ``\\u`` is not one:
over base64 it ran at a tenth of the speed, the relay's largest cost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = b"***"
_SHORT_ESCAPES = {"/": b"\\/", "\\": b"\\\\", '"': b'\\"'}
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _hex_class(digit: str) -> bytes:
    return f"[{digit.lower()}{digit.upper()}]".encode() if digit.isalpha() else digit.encode()


def _spellings(char: str) -> tuple[bytes, bytes]:
    """A regex of every JSON spelling of ``char``, and one of every proper non-empty prefix of them."""
    raw = char.encode("utf-8")
    full = [re.escape(raw)]
    prefixes = [re.escape(raw[:k]) for k in range(1, len(raw))]
    if ord(char) <= 0xFFFF:
        digits = [_hex_class(d) for d in f"{ord(char):04x}"]
        full.append(rb"\\u" + b"".join(digits))
        nested = b""
        for digit in reversed(digits[:3]):
            nested = b"(?:" + digit + nested + b")?"
        prefixes.append(rb"\\(?:u" + nested + b")?")
    if char in _SHORT_ESCAPES:
        full.append(re.escape(_SHORT_ESCAPES[char]))
    part = b"(?:" + b"|".join(prefixes) + b")" if prefixes else b""
    return b"(?:" + b"|".join(full) + b")", part


class SecretPattern:
    """Every spelling of one secret in JSON text (built once per process: the master key)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode("utf-8")
        spellings = [_spellings(char) for char in secret]
        self._any = re.compile(b"".join(full for full, _ in spellings)) if secret else None
        # A proper, non-empty prefix of some spelling of the secret: the whole spellings of its
        # first characters, then part of the next one's, or nothing more. Built from the end:
        # prefix(j) = spelling(j) prefix(j + 1)? | part(j), and prefix(last) = part(last).
        partial = b""
        for full, part in reversed(spellings):
            options = [full + (b"(?:" + partial + b")?" if partial else b"")] if partial else []
            options += [part] if part else []
            partial = b"(?:" + b"|".join(options) + b")" if options else b""
        self._partial = re.compile(partial) if partial else None
        # Where a spelling can begin: the first character's first byte, or a backslash.
        self._starts = {secret.encode("utf-8")[:1], b"\\"} if secret else set()
        # Each spelling of a character is at most 6 bytes (\\uXXXX) or its UTF-8 bytes.
        self.longest = sum(max(6, len(char.encode("utf-8"))) for char in secret)
        self._escape_marks = [b"\\u"] + [b"\\" + c.encode() for c in secret if c in _SHORT_ESCAPES]
        # A byte of the secret that base64 never holds ('-' of "sk-..."), if it has one: a single
        # byte is looked for with memchr, many times faster than the whole secret in base64.
        self._probe = next((bytes((b,)) for b in self.secret if b not in _BASE64), b"")

    def mask(self, data: bytes) -> bytes:
        """``data`` with every spelling of the secret replaced by ``***``; ``data`` itself if none.

        With an escape in sight, one regex pass over it all, leftmost first: a raw replace made
        first could land inside an escape (a key of hex digits after ``\\u0030``) and break it.
        """
        if not self.secret:
            return data
        # Every escape begins with a backslash, which base64 never holds: one memchr rules them out.
        if b"\\" in data and self._any is not None and any(mark in data for mark in self._escape_marks):
            return self._any.sub(MASK, data)
        if self._probe and self._probe not in data:
            return data
        return data.replace(self.secret, MASK) if self.secret in data else data

    def held_suffix(self, data: bytes) -> int:
        """Length of the longest end of ``data`` that may begin a spelling of the secret (not all of it)."""
        if self._partial is None or not data:
            return 0
        size = len(data)
        start = max(0, size - self.longest + 1)
        candidates = sorted(at for first in self._starts for at in _positions(data, first, start))
        for at in candidates:  # the earliest that fits holds back the longest end
            if self._partial.fullmatch(data, at):
                return size - at
        return 0


def _positions(data: bytes, byte: bytes, start: int) -> list[int]:
    found, at = [], data.find(byte, start)
    while at >= 0:
        found.append(at)
        at = data.find(byte, at + 1)
    return found


class Masker:
    """Masks the secret in a stream, including a spelling split across two pieces.

    A piece is held back only from where its end could begin a spelling, until the next piece
    shows whether it does: any spelling that starts in what is sent therefore ends inside what
    was scanned, and has been replaced. Usually nothing is held and the piece goes on as it came.
    """

    def __init__(self, pattern: SecretPattern) -> None:
        self._pattern, self._carry = pattern, b""

    def feed(self, piece: bytes) -> bytes:
        pattern = self._pattern
        if not pattern.secret:
            return piece
        data = self._carry + piece if self._carry else piece
        data = pattern.mask(data)
        held = pattern.held_suffix(data)
        self._carry = data[len(data) - held :] if held else b""
        return data[: len(data) - held] if held else data

    def flush(self) -> bytes:
        carry, self._carry = self._carry, b""
        return carry


class Secrets:
    """Several secrets masked together: every channel's key, in whatever any channel answers
    (one channel's upstream may echo another's key if they share a back end)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.patterns = tuple(SecretPattern(secret) for secret in dict.fromkeys(secrets) if secret)

    def mask(self, data: bytes) -> bytes:
        """``data`` with every spelling of every secret replaced; ``data`` itself if none is in it."""
        for pattern in self.patterns:
            data = pattern.mask(data)
        return data

    def redact(self, text: str) -> str:
        """The same for text already decoded from JSON (an error message): the raw secrets."""
        for pattern in self.patterns:
            text = text.replace(pattern.secret.decode("utf-8"), "***")
        return text

    def masker(self) -> Maskers:
        return Maskers(self.patterns)


class Maskers:
    """Every secret masked in one stream: a :class:`Masker` per secret, one after another."""

    def __init__(self, patterns: Iterable[SecretPattern]) -> None:
        self._maskers = [Masker(pattern) for pattern in patterns]

    def feed(self, piece: bytes) -> bytes:
        for masker in self._maskers:
            piece = masker.feed(piece)
        return piece

    def flush(self) -> bytes:
        data = b""
        for masker in self._maskers:  # what one holds back still passes the ones after it
            data = masker.feed(data) + masker.flush()
        return data
