"""The Redis side of alert delivery: which teams have alerts, which are due, done or postponed.

settle.lua queues an alert in its team's outbox (``TeamSpace.outbox``: id -> time of the next
attempt, ms; ``TeamSpace.outbox_bodies``: id -> the facts as JSON, ``<id>:attempts`` -> attempts
so far). Every change here is one command or one MULTI on the team's hash tag, so it runs on
Redis Cluster. The index of teams (``ALERT_TEAMS``) is a plain global set and only a shortcut:
:func:`teams_with_alerts` finds every team with alerts from the team registry if an add to it
was lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.store.keyspace import ALERT_TEAMS, TEAM_REGISTRY, TeamSpace
from gateway.store.pipelined import pipelined
from gateway.store.protocol import Redis, text

ATTEMPTS_SUFFIX = ":attempts"


@dataclass(frozen=True)
class QueuedAlert:
    team: str
    alert_id: str
    facts: bytes | None  # None: the body is gone (an outbox entry without one is dropped)
    attempts: int


async def mark_pending(redis: Redis, team: str) -> None:
    """Index a team whose outbox just received an alert (after settle.lua said so)."""
    await redis.sadd(ALERT_TEAMS, team)


async def indexed_teams(redis: Redis) -> set[str]:
    return {text(t) for t in await redis.smembers(ALERT_TEAMS)}


async def teams_with_alerts(redis: Redis) -> set[str]:
    """The full sweep: every registered team whose outbox is not empty (pipelined ZCARDs)."""
    teams = [text(t) for t in await redis.smembers(TEAM_REGISTRY)]
    counts = ((team, ("zcard", TeamSpace(team).outbox)) for team in sorted(teams))
    return {team async for team, count in pipelined(redis, counts) if int(count) > 0}


async def due(redis: Redis, team: str, now_ms: int, limit: int) -> list[QueuedAlert]:
    """Up to ``limit`` of the team's alerts whose next attempt is due, earliest first."""
    space = TeamSpace(team)
    ids = await redis.zrangebyscore(space.outbox, "-inf", now_ms, start=0, num=limit)
    if not ids:
        return []
    names = [text(i) for i in ids]
    fields = [f for name in names for f in (name, name + ATTEMPTS_SUFFIX)]
    values = await redis.hmget(space.outbox_bodies, fields)
    return [
        QueuedAlert(team, name, values[2 * i], int(values[2 * i + 1] or 0)) for i, name in enumerate(names)
    ]


async def remove(redis: Redis, team: str, alert_id: str) -> None:
    """Delivered or dropped: out of the outbox and its body gone, in one MULTI (one hash tag)."""
    space = TeamSpace(team)
    pipe = redis.pipeline(transaction=True)
    pipe.zrem(space.outbox, alert_id)
    pipe.hdel(space.outbox_bodies, alert_id, alert_id + ATTEMPTS_SUFFIX)
    await pipe.execute()


async def postpone(redis: Redis, team: str, alert_id: str, at_ms: int) -> None:
    """A failed attempt: count it and schedule the next one (never re-adds a removed alert)."""
    space = TeamSpace(team)
    pipe = redis.pipeline(transaction=True)
    pipe.hincrby(space.outbox_bodies, alert_id + ATTEMPTS_SUFFIX, 1)
    pipe.zadd(space.outbox, {alert_id: at_ms}, xx=True)
    await pipe.execute()


@dataclass(frozen=True)
class WaitingAlert:
    """An alert in a team's outbox, for ``gateway alerts list``."""

    team: str
    alert_id: str
    facts: bytes | None
    attempts: int
    next_attempt_ms: int


async def waiting(redis: Redis, team: str, limit: int = 1000) -> list[WaitingAlert]:
    """Up to ``limit`` of the team's alerts, due or not, earliest next attempt first."""
    space = TeamSpace(team)
    entries = await redis.zrange(space.outbox, 0, limit - 1, withscores=True)
    if not entries:
        return []
    names = [text(name) for name, _ in entries]
    values = await redis.hmget(space.outbox_bodies, [f for n in names for f in (n, n + ATTEMPTS_SUFFIX)])
    return [
        WaitingAlert(team, name, values[2 * i], int(values[2 * i + 1] or 0), int(score))
        for i, (name, (_, score)) in enumerate(zip(names, entries, strict=True))
    ]


async def pending_counts(redis: Redis, teams: Iterable[str]) -> dict[str, int]:
    """Alerts waiting per team (ZCARD)."""
    counts = ((team, ("zcard", TeamSpace(team).outbox)) for team in teams)
    return {team: int(count) async for team, count in pipelined(redis, counts)}


async def unindex_if_empty(redis: Redis, team: str) -> int:
    """Drop a team from the index if its outbox is empty; answers the alerts it still holds.

    Remove first, then look, then put back if not empty: an alert queued (and indexed by its
    settler) at any moment in between is still found, with no script spanning two hash tags.
    """
    await redis.srem(ALERT_TEAMS, team)
    pending = int(await redis.zcard(TeamSpace(team).outbox))
    if pending:
        await redis.sadd(ALERT_TEAMS, team)
    return pending
