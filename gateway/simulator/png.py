"""Real PNG images of any size, a few KB each, optionally padded to a chosen size.

Written by hand (zlib and struct) so the simulator needs no imaging library.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib
from functools import lru_cache

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = len(_PNG_SIGNATURE) + 4 + 4 + 13 + 4
# A private (2nd letter lower case), safe-to-copy (4th lower case) ancillary chunk type: decoders
# skip it, so a padded image still decodes to the same pixels.
_PAD_CHUNK = b"spAd"
_PALETTE = bytes((0x1F, 0x4E, 0x79, 0x4F, 0x9D, 0xD9, 0xF2, 0xA1, 0x3B, 0xF5, 0xF0, 0xE6))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    # crc32 is chained rather than computed over kind + data so a 20 MB chunk is not copied.
    crc = zlib.crc32(data, zlib.crc32(kind))
    return b"".join((struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc)))


def _pattern_row(width: int, phase: int, tile: int) -> bytes:
    """One scanline of 2-bit palette indices: tiles of the four palette colours, shifted by
    ``phase`` so the next band of tiles is offset and the picture reads as a checkerboard."""
    indices = [((x // tile) + phase) % 4 for x in range(width)]
    indices += [0] * (-width % 4)
    return bytes(
        (indices[i] << 6) | (indices[i + 1] << 4) | (indices[i + 2] << 2) | indices[i + 3]
        for i in range(0, len(indices), 4)
    )


@lru_cache(maxsize=32)
def render_png(width: int, height: int) -> bytes:
    """A valid ``width`` x ``height`` PNG of a four-colour tile pattern, a few KB even at 4K.

    Two bits per pixel and the PNG "Up" filter make every row inside a band of tiles all zeros,
    so zlib sees long runs: even a 4096x4096 image is a few KB and quick to make, where an RGB
    image would be many times both.
    """
    tile = max(1, min(width, height) // 8)
    row_bytes = (width + 3) // 4
    same_as_above = b"\x02" + bytes(row_bytes)  # filter type 2 ("Up") with zero deltas
    rows = {phase: b"\x00" + _pattern_row(width, phase, tile) for phase in range(4)}
    compressor = zlib.compressobj(6)
    parts = []
    for band_start in range(0, height, tile):
        parts.append(compressor.compress(rows[(band_start // tile) % 4]))
        repeats = min(tile, height - band_start) - 1
        if repeats:
            parts.append(compressor.compress(same_as_above * repeats))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 2, 3, 0, 0, 0)  # 2-bit, palette
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", _PALETTE),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        )
    )


@lru_cache(maxsize=8)
def padded_png(width: int, height: int, b64_bytes: int) -> bytes:
    """``render_png`` grown to about ``b64_bytes`` of base64 with random bytes in a private
    ancillary chunk. Random, so no layer of compression in between can shrink it and hide a
    size problem."""
    png = render_png(width, height)
    padding = b64_bytes * 3 // 4 - len(png) - 12
    if padding <= 0:
        return png
    pad = _png_chunk(_PAD_CHUNK, random.randbytes(padding))
    return b"".join((png[:_IHDR_END], pad, png[_IHDR_END:]))


@lru_cache(maxsize=8)
def png_base64(width: int, height: int, b64_bytes: int) -> bytes:
    """The base64 of ``padded_png``, cached because encoding 8 MB per response would otherwise
    dominate the benchmark."""
    return base64.b64encode(padded_png(width, height, b64_bytes))
