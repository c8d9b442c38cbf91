"""What one call did: filled in by the steps, read by settle (the ledger) and observe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallLog:
    request_id: str
    started: float  # perf_counter at arrival
    model: str = "-"
    team: str = "unknown"
    key_id: str | None = None
    n: int = 0
    images: int = 0  # images delivered: the entries of the answer that are images, charged
    upstream_images: int | None = None  # the upstream's usage.generated_images, when it says
    failed_images: dict[str, int] = field(default_factory=dict)  # error code -> entries
    charge_micros: int = 0
    status: int = 0
    upstream_status: int | None = None
    upstream_latency_s: float | None = None
    upstream_outcome: str | None = None  # ok, timeout, connect, 5xx, ...: set once it was called
    rejection: str | None = None  # why the gateway refused it before the upstream
    client_left: bool = False
    stream: bool = False  # "stream": true, relayed as server-sent events (call/stream.py)
    user: str = ""  # OpenAI's end-user id: for the ledger only, never a metric label or logged
    prompt: str | None = None  # only with GATEWAY_LOG_PROMPTS=true
    extra: dict[str, Any] = field(default_factory=dict)
