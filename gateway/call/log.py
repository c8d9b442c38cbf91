"""What one call did: filled in by the steps, read by settle (the ledger) and observe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# An answer may carry thousands of failed entries, each with an error code of its own: a call
# keeps the counts of a few codes (each cut to a sane length: longer than any code the upstream
# documents, so a cut one never reads as one of those), and counts the rest as "other", so neither
# its memory nor its access-log line grows with the answer.
MAX_FAILURE_CODES = 16
MAX_CODE_CHARS = 64


def count_failure(failed: dict[str, int], code: str) -> None:
    """Count one failed entry under ``code`` in ``failed`` (code -> entries), within the bounds."""
    code = code[:MAX_CODE_CHARS]
    if code not in failed and len(failed) >= MAX_FAILURE_CODES:
        code = "other"
    failed[code] = failed.get(code, 0) + 1


@dataclass(frozen=True)
class FailedOver:
    """An attempt after which the call moved on to the next channel: it cannot have made an image."""

    channel: str
    attempt: int  # 1 for the call's first
    outcome: str  # connect, timeout, rate_limited, auth, insufficient_balance, 5xx
    status: int  # the upstream's status; 0 when no answer came (nothing was sent)
    latency_s: float


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
    channel: str = ""  # the upstream channel of the call's last attempt; "" before any
    attempt: int = 0  # how many attempts it made (channels tried)
    unit_cost_micros: int | None = None  # what an image costs there; None: not configured
    failovers: list[FailedOver] = field(default_factory=list)  # attempts before the last, in order
    extra: dict[str, Any] = field(default_factory=dict)
