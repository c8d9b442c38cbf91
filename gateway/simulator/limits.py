"""The simulator's defaults and limits, in one place so every module agrees on them.

The limits keep one mistyped request from eating the machine; all are far above what the upstream
itself allows.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
DEFAULT_SIZE = (1024, 1024)
# Seconds between a stream's image events unless told otherwise: long enough that `make run`
# visibly streams a set, short enough not to bore anyone (the real upstream takes tens of seconds).
DEFAULT_STREAM_GAP = 0.5
SIZE_PRESETS = {"1K": 1024, "2K": 2048, "3K": 3072, "4K": 4096}

FAULT_HEADER = "x-simulator-fault"
FAULT_FIELD = "simulator_fault"

MAX_SIDE = 8192
MAX_PIXELS = 4096 * 4096
MAX_IMAGES = 100
MAX_SEQUENTIAL_IMAGES = 15
MAX_IMAGE_BYTES = 256 * 1024 * 1024
MAX_DELAY = 3600.0
MAX_REQUEST_BODY = 256 * 1024 * 1024  # image-to-image bodies carry up to 14 base64 images
RECORD_LIMIT = 1000
