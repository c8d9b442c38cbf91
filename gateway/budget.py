"""Reserve before the upstream call, settle after it: the atomic Lua steps that make spend exact.

``reserve`` authenticates the key and checks every limit in one script, so a budget can never be
overspent however many gateway processes race for it: spent + reserved <= budget holds after
every step. ``settle`` turns a reservation into spend for the images actually delivered and writes
the usage record and rollups in the same step, so the ledger always agrees with the money.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from gateway.redis_keys import KeySpace


def _load(name: str) -> str:
    common = resources.files("gateway").joinpath("lua_common.lua").read_text(encoding="utf-8")
    body = resources.files("gateway").joinpath(name).read_text(encoding="utf-8")
    return common + "\n" + body


class LuaScript:
    """A script run by EVALSHA, falling back to EVAL on the key's own node when not cached.

    redis-py's ``register_script`` reloads a missing script on every cluster primary, so one dead
    primary would break keys that live elsewhere; EVAL goes only where the key lives.
    """

    def __init__(self, source: str) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)


RESERVE = LuaScript(_load("reserve.lua"))
SETTLE = LuaScript(_load("settle.lua"))
USAGE = LuaScript(_load("usage.lua"))


@dataclass(frozen=True)
class Periods:
    """The UTC calendar periods a moment falls in, as used in counter names."""

    day: str  # 2026-11-25
    month: str  # 2026-11

    @classmethod
    def at(cls, epoch_s: float) -> Periods:
        t = time.gmtime(epoch_s)
        return cls(f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", f"{t.tm_year:04d}-{t.tm_mon:02d}")

    @classmethod
    def now(cls) -> Periods:
        return cls.at(time.time())


def period_resets_at(period: str, epoch_s: float | None = None) -> datetime | None:
    """When a budget period ends (UTC); None for ``total``, which never resets."""
    t = time.gmtime(time.time() if epoch_s is None else epoch_s)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return datetime.fromtimestamp(start + 86400, tz=UTC)
    if period == "month":
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return datetime(year, month, 1, tzinfo=UTC)
    return None


def day_resets_at() -> datetime:
    return period_resets_at("day")  # type: ignore[return-value]


def _counter_keys(space: KeySpace, periods: Periods) -> list[str]:
    return [
        space.spent(f"d{periods.day}"),
        space.spent(f"m{periods.month}"),
        space.spent("total"),
        space.images(periods.day),
    ]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Reservation:
    """What a successful reserve returns: who the caller is and what the headers need."""

    key_id: str
    team: str
    key_name: str
    budget_micros: int  # -1: no budget
    spent_micros: int
    reserved_micros: int
    rpm: int  # -1: no rate limit
    rpm_remaining: int
    rpm_reset_ms: int
    amount_micros: int
    period: str


@dataclass(frozen=True)
class Denial:
    """A reserve refused: ``kind`` says by which check, ``values`` carry the numbers."""

    kind: str
    team: str | None
    key_name: str | None
    values: tuple[str, ...]


async def reserve(
    redis: Any,
    key_id: str,
    secret_hash: str,
    model: str,
    request_id: str,
    max_images: int,
    unit_price_micros: int,
    ttl_ms: int,
    periods: Periods,
) -> Reservation | Denial:
    space = KeySpace(key_id)
    keys = [space.record, space.state, space.reservations, space.reservation_deadlines]
    keys += _counter_keys(space, periods)
    args = [secret_hash, model, request_id, max_images, unit_price_micros, ttl_ms]
    result = await RESERVE(redis, keys, args)
    kind = _s(result[0])
    if kind != "ok":
        team = _s(result[1]) if len(result) > 1 else None
        name = _s(result[2]) if len(result) > 2 else None
        return Denial(kind, team, name, tuple(_s(v) for v in result[3:]))
    return Reservation(
        key_id=key_id,
        team=_s(result[1]),
        key_name=_s(result[2]),
        budget_micros=int(result[3]),
        spent_micros=int(result[4]),
        reserved_micros=int(result[5]),
        rpm=int(result[6]),
        rpm_remaining=int(result[7]),
        rpm_reset_ms=int(result[8]),
        amount_micros=int(result[9]),
        period=_s(result[10]),
    )


@dataclass(frozen=True)
class Settlement:
    duplicate: bool
    charge_micros: int = 0
    unit_price_micros: int = 0
    budget_micros: int = -1
    spent_micros: int = 0
    reserved_micros: int = 0


async def settle(
    redis: Any,
    key_id: str,
    request_id: str,
    model: str,
    images: int,
    unit_price_micros: int,
    periods: Periods,
    retention_days: int,
    record: dict[str, str | int],
) -> Settlement:
    """Settle a call; safe to run twice for the same request id (the second is a no-op)."""
    space = KeySpace(key_id)
    keys = [
        space.record,
        space.state,
        space.reservations,
        space.reservation_deadlines,
        space.settled,
        *_counter_keys(space, periods),
        space.rollup(periods.day),
        space.ledger,
    ]
    oldest_kept_ms = int((time.time() - retention_days * 86400) * 1000)
    flat = [str(item) for pair in record.items() for item in pair]
    args: list[Any] = [request_id, images, unit_price_micros, model, oldest_kept_ms, orjson.dumps(flat)]
    result = await SETTLE(redis, keys, args)
    if _s(result[0]) == "duplicate":
        return Settlement(duplicate=True)
    return Settlement(False, *(int(v) for v in result[1:6]))


@dataclass(frozen=True)
class KeyUsage:
    budget_micros: int
    period: str
    spent_micros: int
    reserved_micros: int
    reserved_images: int
    inflight: int
    images_today: int


async def usage(redis: Any, key_id: str, periods: Periods) -> KeyUsage:
    space = KeySpace(key_id)
    keys = [space.record, space.state, space.reservations, space.reservation_deadlines]
    result = await USAGE(redis, keys + _counter_keys(space, periods), [])
    return KeyUsage(
        budget_micros=int(result[0]),
        period=_s(result[1]),
        spent_micros=int(result[2]),
        reserved_micros=int(result[3]),
        reserved_images=int(result[4]),
        inflight=int(result[5]),
        images_today=int(result[6]),
    )
