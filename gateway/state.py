"""What one gateway process holds while it runs, and the request helpers the routes share.

``GatewayState`` is built by the app's lifespan: the Redis client, the upstream client, the price
book, the spool. Routes reach it as ``request.app.state.gateway``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from redis.exceptions import RedisError, ResponseError

from gateway import budget, errors, metrics
from gateway.errors import GatewayError
from gateway.keys import KeyStore, key_status, parse_token
from gateway.logs import AccessLog
from gateway.pricing import PriceBook, micros_to_usd
from gateway.settings import Settings
from gateway.spool import RecordRefused, Spool
from gateway.upstream import UpstreamClient
from gateway.validation import ImageCall

if TYPE_CHECKING:
    from gateway.routes.images import CallLog

log = logging.getLogger("gateway")

JSON_TYPES = ("application/json", "text/json")
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
    }
)


def bearer_token(request: Request) -> tuple[str, str]:
    """(key_id, sha256) of the caller's well-formed team key, else a 401."""
    header = request.headers.get("authorization")
    if not header:
        raise errors.unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-gw-...'.",
            code="missing_api_key",
        )
    scheme, _, token = header.partition(" ")
    parsed = parse_token(token.strip()) if scheme.lower() == "bearer" else None
    if parsed is None:
        raise errors.unauthorized("Invalid API key.")
    return parsed


async def read_json_body(request: Request, limit: int) -> tuple[bytes, Any]:
    """The raw body (at most ``limit`` bytes, else 413) and its parsed JSON (else 400/415)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() not in JSON_TYPES:
        raise errors.unsupported_media_type()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.payload_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.payload_too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        return body, orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.bad_request("The request body is not valid JSON.") from None


def model_label(model: str, prices: PriceBook) -> str:
    """Model names from the price table, anything else ``other``: metric labels stay bounded."""
    return model if model in prices.prices else "other"


class GatewayState:
    def __init__(
        self, settings: Settings, redis: Any, upstream: UpstreamClient, prices: PriceBook, spool: Spool
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.upstream = upstream
        self.prices = prices
        self.spool = spool
        self.keys = KeyStore(redis)
        self.reservation_ttl_ms = settings.reservation_ttl_s * 1000
        self.metrics_inflight = metrics.INFLIGHT
        self.access_log = AccessLog(enabled=settings.log_level in ("debug", "info"))
        self.draining = False  # set on SIGTERM when GATEWAY_DRAIN_S > 0: /readyz answers 503
        self.inflight = 0
        self._replay_task: asyncio.Task[None] | None = None

    # -- answers -------------------------------------------------------------------------

    def denial_error(self, denial: budget.Denial, call: ImageCall) -> GatewayError:
        kind, v = denial.kind, denial.values
        if kind == "invalid_key":
            return errors.unauthorized("Invalid API key.")
        if kind == "revoked":
            return errors.unauthorized(
                f"This API key was revoked at {_iso_ms(v[0])}.", code="key_revoked", reason="revoked_key"
            )
        if kind == "expired":
            return errors.unauthorized(
                f"This API key expired at {_iso_ms(v[0])}.", code="key_expired", reason="expired_key"
            )
        if kind == "model_not_allowed":
            return errors.model_not_allowed(call.model)
        if kind == "budget":
            return errors.insufficient_quota(_budget_message(v), "budget_exceeded")
        if kind == "images_per_day":
            cap, used, reserved, wanted = v
            return errors.insufficient_quota(
                f"This key's cap of {cap} images per day is reached: {used} delivered and "
                f"{reserved} reserved by calls in flight today, and this call may return up to "
                f"{wanted}. It resets at {budget.day_resets_at().isoformat().replace('+00:00', 'Z')}.",
                "images_per_day_exceeded",
            )
        if kind == "rpm":
            rpm, retry_ms = int(v[0]), int(v[1])
            return errors.rate_limited(
                f"This key's limit of {rpm} requests per minute is reached; retry in "
                f"{retry_ms / 1000:.1f} s.",
                -(-retry_ms // 1000),
            )
        if kind == "concurrency":
            return errors.rate_limited(
                f"This key already has {v[0]} requests in flight, its limit; retry when one finishes.",
                1,
                reason="concurrency_exceeded",
            )
        raise RuntimeError(f"unknown denial {kind!r}")

    # -- Redis ---------------------------------------------------------------------------

    def redis_failed(self, exc: BaseException) -> None:
        metrics.REDIS_ERRORS.inc()
        log.warning("redis error: %s: %s", exc.__class__.__name__, exc)

    async def authenticate_or_raise(self, token: tuple[str, str]) -> dict[str, str]:
        """The key's record if it may be used, else the 401 that says why."""
        key_id, presented = token
        try:
            record = await self.keys.authenticate_parsed(key_id, presented)
        except (RedisError, OSError) as exc:
            self.redis_failed(exc)
            raise errors.redis_unavailable() from None
        if record is None:
            raise errors.unauthorized("Invalid API key.")
        status = key_status(record)
        if status == "revoked":
            raise errors.unauthorized(
                f"This API key was revoked at {_iso_ms(record['revoked_at'])}.",
                code="key_revoked",
                reason="revoked_key",
            )
        if status == "expired":
            raise errors.unauthorized(
                f"This API key expired at {_iso_ms(record['expires_at'])}.",
                code="key_expired",
                reason="expired_key",
            )
        return record

    async def settle(
        self,
        call: CallLog,
        held: budget.Reservation,
        unit_price: int,
        periods: budget.Periods,
        reconcile: bool = False,
    ) -> budget.Settlement | None:
        """Settle in Redis; if Redis is gone, spool it (the caller still gets its images)."""
        call.charge_micros = call.images * unit_price
        entry = {
            "key_id": held.key_id,
            "request_id": call.request_id,
            "model": call.model,
            "images": call.images,
            "unit_price_micros": unit_price,
            "day": periods.day,
            "month": periods.month,
            "record": {
                "request_id": call.request_id,
                "ts_ms": int(time.time() * 1000),
                "day": periods.day,
                "team": held.team,
                "key_id": held.key_id,
                "key_name": held.key_name,
                "model": call.model,
                "n": call.n,
                "images": call.images,
                "upstream_status": call.upstream_status or 0,
                "upstream_latency_ms": int((call.upstream_latency_s or 0) * 1000),
                "outcome": call.upstream_outcome or "unknown",
                "client_left": int(call.client_left),
                "reconcile": int(reconcile),
            },
        }
        try:
            settled = await self.settle_entry(entry)
        except Exception as exc:  # any failure, not only RedisError: the record must not be lost
            self.redis_failed(exc)
            self._spool(entry)
            return None
        if settled.budget_micros > 0:
            ratio = settled.spent_micros / settled.budget_micros
            metrics.BUDGET_USED.labels(held.team, held.key_name).set(ratio)
        return settled

    def _spool(self, entry: dict[str, Any]) -> None:
        try:
            self.spool.append(entry)
        except OSError:  # disk full, read-only: the log line is the record of last resort
            log.exception("could not spool settlement %s", orjson.dumps(entry).decode())
            return
        metrics.SPOOL_PENDING.inc()

    async def settle_entry(self, entry: dict[str, Any]) -> budget.Settlement:
        periods = budget.Periods(entry["day"], entry["month"])
        return await budget.settle(
            self.redis,
            entry["key_id"],
            entry["request_id"],
            entry["model"],
            entry["images"],
            entry["unit_price_micros"],
            periods,
            self.settings.ledger_retention_days,
            entry["record"],
        )

    # -- background ----------------------------------------------------------------------

    def start_spool_replay(self, every_s: float = 1.0) -> None:
        self._replay_task = asyncio.create_task(self._replay_loop(every_s), name="spool-replay")

    async def stop_spool_replay(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            try:
                await self._replay_task
            except asyncio.CancelledError:
                pass
        try:
            await self.replay_spool()
        except Exception:
            pass  # the spool stays on disk; the next start (or any other replica) replays it

    async def replay_spool(self) -> int:
        """Replay the whole spool directory, this process's file and any other's.

        The pending gauge is then set from the files themselves, not counted up and down: a
        process that replays another one's records would otherwise go negative.
        """
        try:
            return await self.spool.replay(self._replay_entry)
        finally:
            metrics.SPOOL_PENDING.set(self.spool.pending())

    async def _replay_entry(self, entry: dict[str, Any]) -> None:
        try:
            await self.settle_entry(entry)
        except ResponseError as exc:  # Redis answered and refused this one: not an outage
            raise RecordRefused(str(exc)) from exc

    async def _replay_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.replay_spool()
            except Exception as exc:  # never let the loop die: the spool would wait forever
                log.debug("spool replay postponed: %s", exc.__class__.__name__)

    # -- observation ---------------------------------------------------------------------

    def observe(self, call: CallLog) -> None:
        """Metrics and the access-log line for one finished call."""
        model = model_label(call.model, self.prices)
        elapsed = time.perf_counter() - call.started
        child = metrics.child
        child(metrics.REQUESTS, model, call.team, str(call.status)).inc()
        child(metrics.REQUEST_DURATION, model).observe(elapsed)
        if call.images:
            child(metrics.IMAGES, model, call.team).inc(call.images)
            child(metrics.SPEND, model, call.team).inc(call.charge_micros / 1_000_000)
        if call.upstream_outcome is not None:
            child(metrics.UPSTREAM_DURATION, model, call.upstream_outcome).observe(
                call.upstream_latency_s or 0.0
            )
            if call.upstream_outcome in UPSTREAM_ERROR_REASONS:
                child(metrics.UPSTREAM_ERRORS, model, call.upstream_outcome).inc()
        if call.rejection is not None:
            child(metrics.REJECTIONS, call.team, call.rejection).inc()
        if self.access_log.enabled:
            self.access_log.write(
                {
                    "ts": time.time(),
                    "request_id": call.request_id,
                    "team": call.team,
                    "key_id": call.key_id,
                    "model": call.model,
                    "n": call.n,
                    "images": call.images,
                    "cost_usd": micros_to_usd(call.charge_micros),
                    "status": call.status,
                    "upstream_status": call.upstream_status,
                    "upstream_outcome": call.upstream_outcome,
                    "rejection": call.rejection,
                    "latency_ms": round(elapsed * 1000, 2),
                    "upstream_latency_ms": None
                    if call.upstream_latency_s is None
                    else round(call.upstream_latency_s * 1000, 2),
                    "client_left": call.client_left,
                    **({"prompt": call.prompt} if self.settings.log_prompts else {}),
                    **call.extra,
                }
            )


def _budget_message(values: tuple[str, ...]) -> str:
    budget_micros, spent, reserved, amount, period = values
    names = {"day": "daily", "month": "monthly", "total": "total"}
    text = (
        f"This key's {names.get(period, period)} budget of ${micros_to_usd(int(budget_micros))} "
        f"is exhausted: ${micros_to_usd(int(spent))} spent and ${micros_to_usd(int(reserved))} "
        f"reserved by calls in flight, and this call may cost up to ${micros_to_usd(int(amount))}."
    )
    resets = budget.period_resets_at(period)
    if resets is None:
        return text + " A total budget does not reset; ask an admin to raise it."
    return text + f" It resets at {resets.isoformat().replace('+00:00', 'Z')}."


def _iso_ms(ms: str | int) -> str:
    seconds = int(ms) / 1000
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def instance_name() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"
