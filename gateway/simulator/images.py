"""An image's bytes in the format the request asked for (``output_format``): PNG or JPEG."""

from __future__ import annotations

from gateway.simulator.jpeg import jpeg_base64, padded_jpeg
from gateway.simulator.png import padded_png, png_base64

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}


def image_file(output_format: str, width: int, height: int, b64_bytes: int) -> bytes:
    """The image file, padded to about ``b64_bytes`` of base64 (0: as small as it comes)."""
    if output_format == "jpeg":
        return padded_jpeg(width, height, b64_bytes)
    return padded_png(width, height, b64_bytes)


def image_base64(output_format: str, width: int, height: int, b64_bytes: int) -> bytes:
    """The base64 of ``image_file``, cached by the encoders."""
    if output_format == "jpeg":
        return jpeg_base64(width, height, b64_bytes)
    return png_base64(width, height, b64_bytes)
