"""What the simulator received, kept for tests (``GET /_simulator/requests``)."""

from __future__ import annotations

import base64
import time
from collections import deque
from typing import Any

from aiohttp import web

from gateway.simulator.limits import RECORD_LIMIT

_Entry = tuple[str, str, tuple[tuple[bytes, bytes], ...], bytes, float]


class Recorder:
    """The last ``limit`` generation calls, kept raw: converting to JSON happens only when a
    test asks, so recording costs the benchmark next to nothing."""

    def __init__(self, limit: int = RECORD_LIMIT) -> None:
        self.count = 0
        self.entries: deque[_Entry] = deque(maxlen=limit)

    def add(self, request: web.Request, body: bytes) -> None:
        self.count += 1
        self.entries.append((request.method, request.raw_path, request.raw_headers, body, time.time()))

    def clear(self) -> None:
        self.count = 0
        self.entries.clear()

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "requests": [self._describe(*e) for e in self.entries]}

    @staticmethod
    def _describe(
        method: str, path: str, raw_headers: tuple[tuple[bytes, bytes], ...], body: bytes, received_at: float
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for raw_name, raw_value in raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "method": method,
            "path": path,
            "headers": headers,
            "body_b64": base64.b64encode(body).decode("ascii"),
            "received_at": received_at,
        }
