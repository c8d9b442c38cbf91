"""Every Prometheus metric the gateway exports, in one place.

The names are the contract with the dashboards and alerts in deploy/. Label values are bounded:
teams come from key records that an admin creates, models from the price table (anything else is
``other``), reasons and outcomes from fixed lists. Never a key, a key_id or a prompt.

With several workers, ``gateway serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` (one directory per
gateway instance) before this module is imported, and ``/metrics`` aggregates the workers' files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway import __version__

# The *_created series double the page for no dashboard's benefit.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

# Image generation takes 5 to 60 s; the library's default buckets stop at 10 s.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    15,
    20,
    30,
    45,
    60,
    90,
    120,
    180,
    300,
)

REQUESTS = Counter(
    "gateway_requests",
    "Image generation requests answered, by HTTP status.",
    ["model", "team", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from request to response, gateway included.",
    ["model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "gateway_upstream_duration_seconds",
    "Time the upstream took to answer, by outcome.",
    ["model", "outcome"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IMAGES = Counter(
    "gateway_images", "Images delivered to callers (and charged).", ["model", "team"], registry=REGISTRY
)
SPEND = Counter("gateway_spend_usd", "Money charged to teams, in USD.", ["model", "team"], registry=REGISTRY)
REJECTIONS = Counter(
    "gateway_rejections",
    "Requests refused by the gateway before reaching the upstream, by reason.",
    ["team", "reason"],
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors",
    "Upstream calls that failed, by reason.",
    ["model", "reason"],
    registry=REGISTRY,
)
CHANNEL_CALLS = Counter(
    "gateway_channel_calls",
    "Upstream attempts per channel, by outcome (ok, connect, timeout, 5xx, rate_limited, auth, ...): "
    "a call that moved on to another channel counts once per channel it tried.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
CHANNEL_FAILOVERS = Counter(
    "gateway_channel_failovers",
    "Attempts after which the call moved on to the next channel (they cannot have made an image), "
    "by the channel left and why.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
CHANNEL_DURATION = Histogram(
    "gateway_channel_upstream_duration_seconds",
    "Time a channel took to answer one attempt, whatever its outcome.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
CHANNEL_RESTING = Gauge(
    "gateway_channel_resting",
    "1 while a channel rests (no call goes to it unless no other channel can take it), else 0; "
    "once its rest is over it is on probation (0) until one live call there succeeds or fails. As "
    "the shared rest state (Redis, copied every second) says at scrape time.",
    ["channel"],
    multiprocess_mode="mostrecent",  # every process reads the same Redis: the latest read wins
    registry=REGISTRY,
)
MODEL_CHANNELS = Gauge(
    "gateway_model_channels_available",
    "Channels serving a priced model that are not resting (on probation counts): at 0 its calls "
    "are refused with 503 until one's rest ends.",
    ["model"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "gateway_inflight_requests",
    "Image requests being processed now.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
FAILED_IMAGES = Counter(
    "gateway_upstream_failed_images",
    "Entries of a 200 answer that were an error instead of an image (not charged), by code.",
    ["model", "code"],
    registry=REGISTRY,
)
USAGE_MISMATCHES = Counter(
    "gateway_upstream_usage_mismatches",
    "200 answers whose usage.generated_images disagreed with the images counted (flagged for "
    "reconciliation; the charge follows the images counted).",
    ["model"],
    registry=REGISTRY,
)
OVER_DELIVERED = Counter(
    "gateway_over_delivered_images",
    "Images an upstream delivered beyond what their call reserved (n, or max_images): delivered, "
    "not charged, recorded (over_delivered) for reconciliation with the upstream.",
    ["model", "team"],
    registry=REGISTRY,
)
LATE_OVERSPENDS = Counter(
    "gateway_late_settlements_over_budget",
    "Settlements whose reservation had lapsed (their process was cut off from Redis) and whose "
    "charge took a budget past its limit.",
    ["team", "key_name"],
    registry=REGISTRY,
)
REDIS_ERRORS = Counter("gateway_redis_errors", "Redis operations that failed.", registry=REGISTRY)
SPOOL_PENDING = Gauge(
    "gateway_spool_pending_records",
    "Usage records waiting in the local spool for Redis to come back.",
    multiprocess_mode="livemax",  # every worker reports the whole shared spool directory
    registry=REGISTRY,
)
SPOOL_FOREIGN = Gauge(
    "gateway_spool_foreign_records",
    "Spooled usage records that belong to another Redis store: kept, not replayed here.",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
BUDGET_USED = Gauge(
    "gateway_budget_used_ratio",
    "Spent / budget of a key in its current period (keys with a budget only).",
    ["team", "key_name"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
TEAM_BUDGET_USED = Gauge(
    "gateway_team_budget_used_ratio",
    "Spent / budget of a team (all its keys) in its current period (teams with a budget only).",
    ["team"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
BUDGET_EXHAUSTED = Gauge(
    "gateway_budget_exhausted",
    "1 while a key's budget is used up for its current period (spent reached it, or it refused a "
    "call with less than one image left), else 0 (keys with a budget only).",
    ["team", "key_name"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
TEAM_BUDGET_EXHAUSTED = Gauge(
    "gateway_team_budget_exhausted",
    "1 while a team's budget is used up for its current period (spent reached it, or it refused "
    "a call with less than one image left), else 0 (teams with a budget only).",
    ["team"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
ALERT_OUTCOMES = ("delivered", "failed", "expired")
ALERT_DELIVERIES = Counter(
    "gateway_alert_deliveries",
    "Budget alert webhook attempts, by outcome: delivered (2xx), failed (other status, timeout, "
    "unreachable: retried), expired (older than GATEWAY_ALERT_MAX_AGE_S: dropped unsent).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ALERT_OUTCOMES:  # every outcome exported from the start (0), for rate() and alerts
    ALERT_DELIVERIES.labels(_outcome)
ALERTS_PENDING = Gauge(
    "gateway_alerts_pending",
    "Budget alerts waiting in Redis to be delivered, every team's, read from Redis when /metrics "
    "is scraped (at most every 15 s), with or without a webhook configured.",
    multiprocess_mode="mostrecent",  # every process reads the same Redis: the latest read wins
    registry=REGISTRY,
)
ALERT_OLDEST_PENDING = Gauge(
    "gateway_alert_oldest_pending_seconds",
    "Age of the oldest budget alert the sender has tried and not delivered yet (0: none).",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
ADMIN_AUTH_FAILURES = Counter(
    "gateway_admin_auth_failures",
    "Admin authentications refused (admin API and console sign-in): a wrong token (invalid_token) "
    "or any token from an address cooling off after too many wrong ones (blocked).",
    ["reason"],
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "gateway_build_info",
    "Always 1; the labels say what is running.",
    ["version", "python"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)


ADMIN_AUTH_REASONS = ("invalid_token", "blocked")
# What a caller whose key is not known yet (team "unknown") can be refused for.
UNIDENTIFIED_REJECTIONS = ("invalid_key", "bad_request", "too_many_pending", "redis_unavailable")


def export_zeros(
    models: Iterable[str], teams: Iterable[str], upstream_reasons: Iterable[str], channels: Iterable[str] = ()
) -> None:
    """Put the counters' known series on the page at 0 before anything happened, so a dashboard
    shows 0 rather than "No data" and rate() has a start: upstream errors per model and reason,
    images and spend per team and model, each channel's attempts per outcome, rejections of
    unidentified callers, admin sign-in failures. Series of other values (a team's first refusal)
    appear when first counted."""
    models, reasons = sorted(models), sorted(upstream_reasons)
    for channel in channels:
        for outcome in ("ok", *reasons):
            CHANNEL_CALLS.labels(channel, outcome)
    for model in models:
        for reason in reasons:
            UPSTREAM_ERRORS.labels(model, reason)
        USAGE_MISMATCHES.labels(model)
        for team in teams:
            IMAGES.labels(model, team)
            SPEND.labels(model, team)
    for reason in UNIDENTIFIED_REJECTIONS:
        REJECTIONS.labels("unknown", reason)
    for reason in ADMIN_AUTH_REASONS:
        ADMIN_AUTH_FAILURES.labels(reason)


@functools.lru_cache(maxsize=8192)
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: label values are bounded, and the request path calls
    this several times per request (labels() validates and locks on every call)."""
    return metric.labels(*labels)


def render() -> bytes:
    """The exposition text: this process's registry, or every worker's files aggregated."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    mark_dead_workers(directory)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def mark_dead_workers(directory: str) -> list[int]:
    """Drop the live-gauge files of workers that died; returns their pids.

    A worker killed with SIGKILL never decrements its in-flight gauge, and uvicorn replaces it
    with a new pid: without this its last value would be summed forever. Only ``live*`` gauge
    files go; counter files of dead workers stay, or the counters would go backwards.
    """
    pids = {int(m.group(1)) for m in map(_LIVE_GAUGE_FILE.fullmatch, os.listdir(directory)) if m}
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker's scrape removed it first
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker stays a zombie until uvicorn reaps it; it counts as dead already.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no procfs here: the signal check said it exists
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
