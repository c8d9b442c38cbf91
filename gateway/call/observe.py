"""Step 6: metrics and the one access-log line of a finished call, refused or not."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.call.log import CallLog
from gateway.core import metrics
from gateway.core.logs import AccessLog
from gateway.money.micros import micros_to_usd
from gateway.upstream.failures import CONTENT_SAFETY_CODES

UPSTREAM_ERROR_REASONS = frozenset(
    {
        "timeout",
        "connect",
        "5xx",
        "4xx",
        "auth",
        "insufficient_balance",
        "content_safety",
        "rate_limited",
        "bad_response",
        "stream_broken",  # a stream that broke off, or stalled, mid-way (call/stream.py)
        "stream_stalled",
        "too_large",
    }
)


def failure_label(code: str) -> str:
    """Known upstream codes as they are, anything else ``other``: metric labels stay bounded."""
    return code if code in CONTENT_SAFETY_CODES else "other"


class Observer:
    def __init__(self, model_label: Callable[[str], str], access_log: AccessLog, log_prompts: bool) -> None:
        self.model_label = model_label  # model names from the price table, else "other"
        self.access_log = access_log
        self.log_prompts = log_prompts

    def observe(self, call: CallLog) -> None:
        elapsed = time.perf_counter() - call.started
        self._count(call, self.model_label(call.model), elapsed)
        if self.access_log.enabled:
            self.access_log.write(self._line(call, elapsed))

    @staticmethod
    def _count(call: CallLog, model: str, elapsed: float) -> None:
        child = metrics.child
        child(metrics.REQUESTS, model, call.team, str(call.status)).inc()
        child(metrics.REQUEST_DURATION, model).observe(elapsed)
        if call.images:
            child(metrics.IMAGES, model, call.team).inc(call.images)
            child(metrics.SPEND, model, call.team).inc(call.charge_micros / 1_000_000)
        if call.upstream_outcome is not None:
            latency = call.upstream_latency_s or 0.0
            child(metrics.UPSTREAM_DURATION, model, call.upstream_outcome).observe(latency)
            if call.upstream_outcome in UPSTREAM_ERROR_REASONS:
                child(metrics.UPSTREAM_ERRORS, model, call.upstream_outcome).inc()
        if call.rejection is not None:
            child(metrics.REJECTIONS, call.team, call.rejection).inc()
        for code, count in call.failed_images.items():
            child(metrics.FAILED_IMAGES, model, failure_label(code)).inc(count)
        if call.upstream_images is not None and call.upstream_images != call.images:
            child(metrics.USAGE_MISMATCHES, model).inc()
        for failed in call.failovers:  # each attempt the call moved on from, then its last
            child(metrics.CHANNEL_CALLS, failed.channel, failed.outcome).inc()
            child(metrics.CHANNEL_FAILOVERS, failed.channel, failed.outcome).inc()
            child(metrics.CHANNEL_DURATION, failed.channel).observe(failed.latency_s)
        if call.channel and call.upstream_outcome is not None:
            child(metrics.CHANNEL_CALLS, call.channel, call.upstream_outcome).inc()
            child(metrics.CHANNEL_DURATION, call.channel).observe(call.upstream_latency_s or 0.0)

    def _line(self, call: CallLog, elapsed: float) -> dict[str, object]:
        upstream_ms = None if call.upstream_latency_s is None else round(call.upstream_latency_s * 1000, 2)
        return {
            "ts": time.time(),
            "request_id": call.request_id,
            "team": call.team,
            "key_id": call.key_id,
            "model": call.model,
            "n": call.n,
            "images": call.images,
            # The failed entries' total, and their count for at most a few codes (call/log.py):
            # one line stays short whatever the answer held.
            **(
                {"failed_images_total": sum(call.failed_images.values()), "failed_images": call.failed_images}
                if call.failed_images
                else {}
            ),
            "cost_usd": micros_to_usd(call.charge_micros),
            "status": call.status,
            "upstream_status": call.upstream_status,
            "upstream_outcome": call.upstream_outcome,
            "rejection": call.rejection,
            "latency_ms": round(elapsed * 1000, 2),
            "upstream_latency_ms": upstream_ms,
            "client_left": call.client_left,
            **({"channel": call.channel} if call.channel else {}),
            **({"failovers": [f"{f.channel}:{f.outcome}" for f in call.failovers]} if call.failovers else {}),
            **({"stream": True} if call.stream else {}),
            **({"prompt": call.prompt} if self.log_prompts else {}),
            **call.extra,
        }
