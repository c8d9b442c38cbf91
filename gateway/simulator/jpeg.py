"""Real baseline JPEG images of any size, one flat colour, optionally padded to a chosen size.

The standard library has no JPEG encoder and the project does not depend on an imaging library,
so this writes the file by hand. A flat colour makes that small: every 8x8 block's AC
coefficients are zero and its DC differs from the block before by zero, so with Huffman tables
in which "DC difference 0" and "end of block" are the one-bit code ``0``, every block after the
first is two zero bits. The image data is a handful of leading bits and then zero bytes: a
4096x4096 image is about 100 KB and costs next to nothing to make.
"""

from __future__ import annotations

import base64
import random
import struct
from functools import lru_cache

_COLOUR = (0x1F, 0x4E, 0x79)  # the PNG pattern's first colour
_QUANT = 8  # every coefficient divided by 8: a flat block's DC becomes (sample - 128)
_MCU_SIDE = 16  # 4:2:0 sampling: one MCU is 16x16 pixels, four luma blocks and one of each chroma
_MCU_BITS = 6 * 2  # six blocks, each "DC difference 0" + "end of block"
_MAX_SEGMENT = 65533  # a marker segment's data, after its two length bytes


def _segment(marker: int, data: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(data) + 2) + data


def _headers(width: int, height: int) -> bytes:
    """SOI through SOS: JFIF, one quantisation table, the frame, two Huffman tables, the scan."""
    jfif = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    quant = _segment(0xDB, b"\x00" + bytes([_QUANT]) * 64)
    components = b"\x01\x22\x00" + b"\x02\x11\x00" + b"\x03\x11\x00"  # Y 2x2, Cb 1x1, Cr 1x1
    frame = _segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + components)
    # DC table 0: category 0 is "0"; categories 1-11 are five-bit codes 10000-11010.
    dc_table = b"\x00" + bytes([1, 0, 0, 0, 11] + [0] * 11) + bytes(range(12))
    # AC table 0: end-of-block is "0", the only symbol a flat image needs.
    ac_table = b"\x10" + bytes([1] + [0] * 15) + b"\x00"
    huffman = _segment(0xC4, dc_table + ac_table)
    scan = _segment(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00")
    return b"\xff\xd8" + jfif + quant + frame + huffman + scan


def _ycbcr(red: int, green: int, blue: int) -> tuple[int, int, int]:
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    blue_diff = 128 - 0.168736 * red - 0.331264 * green + 0.5 * blue
    red_diff = 128 + 0.5 * red - 0.418688 * green - 0.081312 * blue
    return round(luma), round(blue_diff), round(red_diff)


def _dc_bits(value: int) -> str:
    """A DC difference as its Huffman code (from the table above) and its magnitude bits."""
    if value == 0:
        return "0"
    category = abs(value).bit_length()
    magnitude = value if value > 0 else value + (1 << category) - 1
    return format(0b10000 + category - 1, "05b") + format(magnitude, f"0{category}b")


def _first_mcu_bits() -> str:
    """The first MCU sets each component's colour; every later one repeats it."""
    luma, blue_diff, red_diff = (sample - 128 for sample in _ycbcr(*_COLOUR))
    first_luma = _dc_bits(luma) + "0"
    return first_luma + "00" * 3 + _dc_bits(blue_diff) + "0" + _dc_bits(red_diff) + "0"


def _bits_to_bytes(bits: str) -> bytes:
    data = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    return data.replace(b"\xff", b"\xff\x00")  # byte stuffing: 0xFF in image data is followed by 0


def _scan_data(width: int, height: int) -> bytes:
    """The entropy-coded image: the first MCU's bits, then zero bits, then padding ones."""
    mcus = -(-width // _MCU_SIDE) * -(-height // _MCU_SIDE)
    head = _first_mcu_bits()
    zeros = (mcus - 1) * _MCU_BITS
    align = min(zeros, -len(head) % 8)
    head += "0" * align
    zeros -= align
    if zeros == 0:
        return _bits_to_bytes(head + "1" * (-len(head) % 8))
    tail_zeros = zeros % 8
    tail = "0" * tail_zeros + "1" * (-tail_zeros % 8) if tail_zeros else ""
    return _bits_to_bytes(head) + bytes(zeros // 8) + _bits_to_bytes(tail)


@lru_cache(maxsize=32)
def render_jpeg(width: int, height: int) -> bytes:
    """A valid baseline ``width`` x ``height`` JPEG of one colour."""
    return _headers(width, height) + _scan_data(width, height) + b"\xff\xd9"


@lru_cache(maxsize=8)
def padded_jpeg(width: int, height: int, b64_bytes: int) -> bytes:
    """``render_jpeg`` grown to about ``b64_bytes`` of base64 with random bytes in comment
    segments, which decoders skip; random so no compression in between can hide the size."""
    jpeg = render_jpeg(width, height)
    padding = b64_bytes * 3 // 4 - len(jpeg)
    segments = -(-padding // (_MAX_SEGMENT + 4)) if padding > 0 else 0
    payload = padding - 4 * segments
    if payload <= 0:
        return jpeg
    noise = random.randbytes(payload)
    comments = [_segment(0xFE, noise[i : i + _MAX_SEGMENT]) for i in range(0, payload, _MAX_SEGMENT)]
    return jpeg[:20] + b"".join(comments) + jpeg[20:]  # after SOI and the JFIF segment


@lru_cache(maxsize=8)
def jpeg_base64(width: int, height: int, b64_bytes: int) -> bytes:
    """The base64 of ``padded_jpeg``, cached like ``png_base64``."""
    return base64.b64encode(padded_jpeg(width, height, b64_bytes))
