"""Reserve before the upstream call, settle after it: the atomic steps that make spend exact.

``reserve`` authenticates the key and checks every limit in one script, so a budget can never be
overspent however many gateway processes race for it: spent + reserved <= budget holds after
every step. ``settle`` turns a reservation into spend for the images actually delivered and writes
the usage record and rollups in the same step, so the ledger always agrees with the money.
This module turns the scripts' named answers into typed objects; the scripts are in
``gateway/store/lua/`` and loaded by :mod:`gateway.scripts`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from gateway.money import orphan_record
from gateway.money.periods import DAY_S, Periods
from gateway.store import scripts
from gateway.store.client import SOCKET_TIMEOUT_S
from gateway.store.keyspace import KeySpace, TeamSpace
from gateway.store.protocol import Redis, RedisValue, text
from gateway.store.scripts import named
from gateway.store.slots import SLOT_WAIT_S

# How long settle.lua remembers a settled request id. A settlement replayed within this window
# (from the spool, or resent by the cluster client) is recognised and changes nothing; settle.py
# keeps spool replay well inside it. Past it a replay would be charged again.
SETTLED_MEMORY_MS = 2 * DAY_S * 1000


# A reserve whose caller was told 503 (its command timed out: a Redis stall) must hold nothing,
# or it keeps money and a concurrency slot until the reservation's lifetime ends. Two guards:
# - the caller's reserve step cancels it (:func:`cancel`, retried in the background until Redis
#   answers): released if it ran, refused by a mark if it is still queued;
# - a backstop deadline for a gateway that dies before it can cancel: Redis refuses a reserve it
#   runs later than the longest a caller can wait for it (a free connection, SLOT_WAIT_S, then
#   the command's own timeout). The deadline is the gateway's wall clock compared with Redis
#   TIME: clocks must agree to within seconds, as NTP keeps them.
# The deadline cannot be tighter: the command's arguments are built before it waits for a
# connection, so "sent at" is unknown here; a tighter one refused healthy reserves in a burst.
RESERVE_DEADLINE_MS = int((SLOT_WAIT_S + SOCKET_TIMEOUT_S) * 1000)
# How long a cancelled request id is remembered: longer than any reserve can wait in a queue.
CANCEL_MEMORY_MS = 10 * 60 * 1000


def _period_ids(periods: Periods) -> list[str]:
    return [periods.period_id(p) for p in ("day", "month", "total")]


def _key_counters(space: KeySpace, periods: Periods) -> list[str]:
    return [*(space.spent(p) for p in _period_ids(periods)), space.images(periods.day)]


def _team_counters(team: TeamSpace, periods: Periods) -> list[str]:
    return [*(team.spent(p) for p in _period_ids(periods)), team.images(periods.day)]


def _key_state(space: KeySpace) -> list[str]:
    return [space.record, space.state, space.reservations, space.ledger]


def _team_state(team: TeamSpace) -> list[str]:
    return [team.settings, team.state, team.reservation_deadlines]


# The two scripts of every call name ~20 keys each, the same for a key all day: built once per
# (key, day) rather than from a dozen nested f-strings and dataclasses per call, which showed in
# the profile. 4,096 entries: a worker's active keys, a few hundred bytes each.
@functools.lru_cache(maxsize=4096)
def _reserve_keys(space: KeySpace, periods: Periods) -> tuple[str, ...]:
    team = space.team_space
    return (
        *_key_state(space),
        space.cancelled,
        *_key_counters(space, periods),
        *_team_state(team),
        *_team_counters(team, periods),
        team.outbox,  # a budget used up is alerted at threshold 1 by the refusal itself
        team.outbox_bodies,
    )


@functools.lru_cache(maxsize=4096)
def _settle_keys(space: KeySpace, periods: Periods) -> tuple[str, ...]:
    team = space.team_space
    return (
        *_key_state(space),
        space.settled,
        *_key_counters(space, periods),
        *_team_state(team),
        *_team_counters(team, periods),
        team.rollup(periods.day),
        team.key_rollup(periods.day),
        team.users(periods.day),
        team.outbox,
        team.outbox_bodies,
    )


# -- reserve ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """A reserve that passed: who the caller is, and its rate-limit headers."""

    team: str
    key_name: str
    rpm: int  # -1: no rate limit
    rpm_remaining: int
    rpm_reset_ms: int
    images: int  # the images held (max_images): the most the call can be charged for


@dataclass(frozen=True)
class Refusal:
    """A reserve refused; the subclass says by which check. Unknown keys carry no team."""

    team: str | None
    key_name: str | None


@dataclass(frozen=True)
class InvalidKey(Refusal):
    pass


@dataclass(frozen=True)
class Revoked(Refusal):
    at_ms: int


@dataclass(frozen=True)
class Expired(Refusal):
    at_ms: int


@dataclass(frozen=True)
class ModelNotAllowed(Refusal):
    pass


@dataclass(frozen=True)
class BudgetExhausted(Refusal):
    """A budget that cannot cover this call. ``exhausted``: what is spent leaves less than one image
    at this price, so the budget is used up for its period (marked in Redis, see reserve.lua);
    otherwise calls in flight or this call's size are what it cannot cover now."""

    scope: str  # "key" or "team": whose budget ran out
    budget_micros: int
    spent_micros: int
    reserved_micros: int
    amount_micros: int
    period: str
    unit_price_micros: int = 0
    exhausted: int = 0
    alerts_queued: int = 0  # the alert at threshold 1 this refusal put in the team's outbox


@dataclass(frozen=True)
class DailyImagesExhausted(Refusal):
    scope: str  # "key" or "team": whose cap was reached
    cap: int
    used: int
    reserved_images: int
    wanted: int


@dataclass(frozen=True)
class RateLimited(Refusal):
    rpm: int
    retry_ms: int


@dataclass(frozen=True)
class TooManyInFlight(Refusal):
    max_concurrent: int


_REFUSALS: dict[str, type[Refusal]] = {
    "invalid_key": InvalidKey,
    "revoked": Revoked,
    "expired": Expired,
    "model_not_allowed": ModelNotAllowed,
    "budget": BudgetExhausted,
    "images_per_day": DailyImagesExhausted,
    "rpm": RateLimited,
    "concurrency": TooManyInFlight,
}


_TEXT_FIELDS = frozenset({"period", "scope"})


def _refusal(kind: str, fields: dict[str, Any]) -> Refusal:
    cls = _REFUSALS[kind]
    team, name = fields.pop("team", None), fields.pop("key_name", None)
    values = {k: (text(v) if k in _TEXT_FIELDS else int(v)) for k, v in fields.items()}
    return cls(
        team=None if team is None else text(team), key_name=None if name is None else text(name), **values
    )


class ReserveTooLate(RedisError):
    """Redis ran the reserve after its deadline, so it held nothing: the caller gets the 503 that
    any other Redis failure gets (a RedisError, so the request path needs no case of its own)."""


def decode_reserve(reply: list[Any], images: int) -> Reservation | Refusal:
    """The reservation or the refusal; raises :class:`ReserveTooLate` for a reserve run too late."""
    fields = named(reply)
    kind = text(fields.pop("kind"))
    if kind == "late":
        raise ReserveTooLate(f"reserve ran {int(fields['late_ms'])} ms after its deadline")
    if kind != "ok":
        return _refusal(kind, fields)
    return Reservation(
        team=text(fields["team"]),
        key_name=text(fields["key_name"]),
        rpm=int(fields.get("rpm", -1)),
        rpm_remaining=int(fields.get("rpm_remaining", -1)),
        rpm_reset_ms=int(fields.get("rpm_reset_ms", 0)),
        images=images,
    )


async def reserve(
    redis: Redis,
    *,
    space: KeySpace,
    secret_hash: str,
    model: str,
    request_id: str,
    max_images: int,
    unit_price_micros: int,
    lifetime_ms: int,
    periods: Periods,
) -> Reservation | Refusal:
    """Authenticate and hold ``max_images`` at ``unit_price_micros`` until settled or ``lifetime_ms``."""
    keys = _reserve_keys(space, periods)
    deadline_ms = int(time.time() * 1000) + RESERVE_DEADLINE_MS
    args: list[RedisValue] = [
        secret_hash,
        model,
        request_id,
        max_images,
        unit_price_micros,
        lifetime_ms,
        deadline_ms,
        periods.day,
        orphan_record.TEMPLATE,
        space.key_id,
        space.team_space.tag,
    ]
    return decode_reserve(await scripts.RESERVE(redis, keys, args), max_images)


async def cancel(redis: Redis, *, space: KeySpace, request_id: str) -> bool:
    """Cancel a reserve whose caller was told 503; True if it had run and was released."""
    team = space.team_space
    keys = [space.state, space.reservations, space.cancelled, team.state, team.reservation_deadlines]
    reply = await scripts.CANCEL(redis, keys, [request_id, CANCEL_MEMORY_MS, space.key_id])
    return int(named(reply)["released"]) == 1


# -- settle -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settlement:
    """The key's budget right after a settle; None for a request id settled before."""

    budget_micros: int  # -1: no budget
    spent_micros: int
    reserved_micros: int
    over_budget: bool  # a late settlement took the key's or the team's budget past its limit
    alerts_queued: int = 0  # budget alerts this settlement put in the team's outbox
    over_delivered: int = 0  # images delivered beyond the reservation, recorded and not charged

    @property
    def remaining_micros(self) -> int | None:
        if self.budget_micros < 0:
            return None
        return max(0, self.budget_micros - self.spent_micros - self.reserved_micros)


async def settle(
    redis: Redis,
    *,
    space: KeySpace,
    request_id: str,
    model: str,
    images: int,
    charge_micros: int,
    periods: Periods,
    retention_days: int,
    record_fields: list[str],
    user: str = "",
    over_delivered: int = 0,
    attempt_records: Sequence[list[str]] = (),
) -> Settlement | None:
    """Settle a call; safe to run twice for the same request id (the second answers None).

    ``attempt_records``: the records of the attempts the call moved on from, written first."""
    keys = _settle_keys(space, periods)
    oldest_kept_ms = int((time.time() - retention_days * DAY_S) * 1000)
    day_id, month_id, _ = _period_ids(periods)
    args: list[RedisValue] = [
        request_id,
        images,
        charge_micros,
        model,
        oldest_kept_ms,
        SETTLED_MEMORY_MS,
        space.key_id,
        space.team_space.tag,
        space.team,
        user,
        day_id,
        month_id,
        periods.day,
        f"{periods.month}-01",
        over_delivered,
        orjson.dumps(attempt_records).decode() if attempt_records else "",
        *record_fields,  # last: settle.lua reads them from ARGV[17] on
    ]
    fields = named(await scripts.SETTLE(redis, keys, args))
    if text(fields["kind"]) == "duplicate":
        return None
    return Settlement(
        budget_micros=int(fields["budget_micros"]),
        spent_micros=int(fields["spent_micros"]),
        reserved_micros=int(fields["reserved_micros"]),
        over_budget=int(fields["over_budget"]) == 1,
        alerts_queued=int(fields["alerts_queued"]),
        over_delivered=int(fields["over_delivered"]),
    )


# -- usage --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyUsage:
    budget_micros: int  # -1: no budget
    period: str
    spent_micros: int
    exhausted: int  # 1: spent reached the budget, or it refused a call it could no longer cover
    reserved_micros: int
    inflight: int
    images_today: int


async def usage(redis: Redis, space: KeySpace, periods: Periods) -> KeyUsage:
    """One key's budget state, after the team's orphaned reservations are released."""
    team = space.team_space
    keys = [space.record, space.state, *_key_counters(space, periods), team.state, team.reservation_deadlines]
    reply = await scripts.USAGE(redis, keys, [periods.day, orphan_record.TEMPLATE, team.tag, space.key_id])
    fields = named(reply)
    period = text(fields.pop("period"))
    return KeyUsage(period=period, **{name: int(value) for name, value in fields.items()})


async def team_usage(redis: Redis, team: TeamSpace, periods: Periods) -> KeyUsage:
    """One team's budget state (``inflight``: its reservations), after orphans are released."""
    keys = [team.settings, team.state, team.reservation_deadlines, *_team_counters(team, periods)]
    reply = await scripts.TEAM_USAGE(redis, keys, [periods.day, orphan_record.TEMPLATE, team.tag])
    fields = named(reply)
    period = text(fields.pop("period"))
    return KeyUsage(period=period, **{name: int(value) for name, value in fields.items()})
