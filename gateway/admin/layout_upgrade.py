"""The one-time move of a store written by the release before team budgets into today's layout.

That release kept each key's whole state under the key's own hash tag, ``gw:{<key_id>}:*``.
Team budgets need a key's state and its team's in one slot, so today every key's state lives
under its team's tag (store/keyspace.py). :func:`ensure_layout` runs before a gateway serves (and
before the CLI touches keys): if the store's layout marker ``gw:layout`` is not ``2``, one
process takes a lock and moves every key; the others wait for the marker.

Per key, in an order that is safe to interrupt and run again:

1. copy every legacy name to its new name (DUMP/RESTORE with its TTL: strings, hashes, streams
   alike), the reservation deadlines into the team's sorted set, and the per-day rollups into the
   team's per-key rollups (HSET: writing them twice changes nothing);
2. turn the legacy record ``gw:{<key_id>}:key`` into the directory entry (one MULTI on one key):
   from here on the key is moved; the release before, should it be started again, finds no
   secret there and refuses the key rather than spend from stale counters;
3. delete the legacy names.

Then each team's own totals (spend per period, images today, reserved, per-model rollups) are
rebuilt from its keys' moved state with SET, never added to, so a second run computes the same.
Nothing may serve during the move: the release before must be stopped first (docs/operations.md
says so), since anything it wrote to the legacy names after its key was moved would be lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.core import background
from gateway.money.rollups import model_field, parse_rollup
from gateway.store.directory import KeyDirectory
from gateway.store.keyspace import (
    KEY_REGISTRY,
    LAYOUT,
    LAYOUT_LOCK,
    TEAM_REGISTRY,
    KeySpace,
    LegacyKeySpace,
    TeamSpace,
    directory_entry,
)
from gateway.store.pipelined import pipelined
from gateway.store.protocol import text

log = logging.getLogger("gateway")

LAYOUT_VERSION = b"2"
LOCK_MS = 10 * 60 * 1000  # renewed after every key: only a dead upgrader lets it lapse
WAIT_S = 30 * 60.0  # how long another process waits for the upgrader before giving up
DAY_TTL_S, MONTH_TTL_S = 3 * 86400, 40 * 86400  # as settle.lua keeps the counters


class LayoutUpgradeTimeout(RuntimeError):
    """Another process holds the upgrade lock and has not finished."""


@dataclass
class UpgradeReport:
    keys_moved: int = 0
    names_moved: int = 0
    teams: set[str] = field(default_factory=set)
    seconds: float = 0.0


async def ensure_layout(redis: Any, *, wait_s: float = WAIT_S) -> UpgradeReport | None:
    """Make sure the store is in today's layout; None if it already was (one GET)."""
    if await redis.get(LAYOUT) == LAYOUT_VERSION:
        return None
    owner = f"{os.uname().nodename}-{os.getpid()}"
    deadline = time.monotonic() + wait_s
    while not await redis.set(LAYOUT_LOCK, owner, nx=True, px=LOCK_MS):
        if await redis.get(LAYOUT) == LAYOUT_VERSION:
            return None
        if time.monotonic() > deadline:
            raise LayoutUpgradeTimeout("another process is upgrading the store's layout; still not done")
        await asyncio.sleep(0.2)
    try:
        if await redis.get(LAYOUT) == LAYOUT_VERSION:  # done by the holder before us
            return None
        report = await upgrade(redis, owner)
        await redis.set(LAYOUT, LAYOUT_VERSION)
        if report.keys_moved:
            log.warning(
                "moved %d keys (%d Redis names) of %d teams to the team layout in %.1f s",
                report.keys_moved,
                report.names_moved,
                len(report.teams),
                report.seconds,
            )
        return report
    finally:
        if await redis.get(LAYOUT_LOCK) == owner.encode():
            await redis.delete(LAYOUT_LOCK)


async def upgrade(redis: Any, owner: str) -> UpgradeReport:
    """Move every legacy key, then rebuild the totals of every team that has keys."""
    started = time.monotonic()
    report = UpgradeReport()
    legacy_names = await _legacy_names(redis)
    key_ids = sorted(k.decode() for k in await redis.smembers(KEY_REGISTRY))
    teams: dict[str, list[str]] = defaultdict(list)
    for key_id in key_ids:
        entry = {k.decode(): v.decode() for k, v in (await redis.hgetall(directory_entry(key_id))).items()}
        if "team" not in entry:
            continue  # a registry entry whose record was never written
        team = entry["team"]
        teams[team].append(key_id)
        names = legacy_names.get(key_id, [])
        if "secret_hash" in entry:
            report.names_moved += await _copy_key(redis, KeySpace(key_id, team), names)
            await _make_directory_entry(redis, key_id, team)
            report.keys_moved += 1
        stale = [n for n in names if n != directory_entry(key_id)]
        if stale:
            await redis.delete(*stale)
        await redis.set(LAYOUT_LOCK, owner, px=LOCK_MS)
    moved = await _team_names(redis)
    for team, members in teams.items():
        await _rebuild_team(redis, team, members, moved.get(team, []))
    report.teams = set(teams)
    report.seconds = time.monotonic() - started
    return report


async def _legacy_names(redis: Any) -> dict[str, list[str]]:
    """key_id -> every legacy name of it, from one SCAN of the store (every primary of a Cluster)."""
    found: dict[str, list[str]] = defaultdict(list)
    async for raw in redis.scan_iter(match="gw:{*}:*", count=1000):
        name = text(raw)
        tag = name[len("gw:{") : name.index("}")]
        if not tag.startswith("team:"):
            found[tag].append(name)
    return found


async def _copy_key(redis: Any, space: KeySpace, names: Iterable[str]) -> int:
    """Copy one key's legacy names to their new ones; answers how many were copied."""
    prefix = LegacyKeySpace(space.key_id).tag + ":"
    copied = 0
    for name in names:
        suffix = name[len(prefix) :]
        kind, _, rest = suffix.partition(":")
        if kind == "resx":
            await _copy_deadlines(redis, space, name)
        elif kind == "rollup":
            await _copy_rollup(redis, space, name, rest)
        else:
            target = _new_name(space, kind, rest)
            if target is None:
                log.warning("layout upgrade: left %s alone (not a name the gateway wrote)", name)
                continue
            await _restore(redis, name, target)
        copied += 1
    return copied


def _new_name(space: KeySpace, kind: str, rest: str) -> str | None:
    fixed = {
        "key": space.record,
        "state": space.state,
        "res": space.reservations,
        "cancelled": space.cancelled,
        "settled": space.settled,
        "ledger": space.ledger,
    }
    if kind in fixed and not rest:
        return fixed[kind]
    if kind == "spent" and rest:
        return space.spent(rest)
    if kind == "images" and rest:
        return space.images(rest)
    if kind == "idem" and rest:
        return space.idempotency(rest)
    return None


async def _restore(redis: Any, source: str, target: str) -> None:
    dumped = await redis.dump(source)
    if dumped is None:  # expired since the scan
        return
    ttl_ms = await redis.pttl(source)
    await redis.restore(target, max(0, ttl_ms), dumped, replace=True)


async def _copy_deadlines(redis: Any, space: KeySpace, source: str) -> None:
    deadlines = await redis.zrange(source, 0, -1, withscores=True)
    if deadlines:
        members = {f"{space.key_id}/{rid.decode()}": score for rid, score in deadlines}
        await redis.zadd(space.team_space.reservation_deadlines, members)


async def _copy_rollup(redis: Any, space: KeySpace, source: str, day: str) -> None:
    fields: dict[str, int] = {}
    for (model, channel), amounts in parse_rollup(await redis.hgetall(source)).items():
        for what, value in _amount_fields(amounts).items():
            fields[f"{space.key_id}|{what}|{model_field(model, channel)}"] = value
    if fields:
        await redis.hset(space.team_space.key_rollup(day), mapping=fields)


def _amount_fields(amounts: Any) -> dict[str, int]:
    return {
        "calls": amounts.calls,
        "images": amounts.images,
        "spend": amounts.spend_micros,
        "failed": amounts.failed,
    }


async def _make_directory_entry(redis: Any, key_id: str, team: str) -> None:
    """The legacy record becomes the directory entry, atomically (one key: one slot)."""
    pipe = redis.pipeline(transaction=True)
    pipe.delete(directory_entry(key_id))
    pipe.hset(directory_entry(key_id), "team", team)
    await pipe.execute()
    await redis.sadd(TEAM_REGISTRY, team)
    await redis.sadd(TeamSpace(team).keys, key_id)


async def _team_names(redis: Any) -> dict[str, list[str]]:
    """team -> every name under its tag, from one SCAN (not one per key: that would be quadratic)."""
    found: dict[str, list[str]] = defaultdict(list)
    async for raw in redis.scan_iter(match="gw:{team:*}:*", count=1000):
        name = text(raw)
        found[name[len("gw:{team:") : name.index("}")]].append(name)
    return found


async def _rebuild_team(redis: Any, team: str, key_ids: list[str], names: list[str]) -> None:
    """A team's totals as the sum of its keys' moved state, written with SET (safe to redo)."""
    space = TeamSpace(team)
    await redis.sadd(TEAM_REGISTRY, team)
    await redis.sadd(space.keys, *key_ids)
    spent: dict[str, int] = defaultdict(int)
    images: dict[str, int] = defaultdict(int)
    days: list[str] = []
    key_prefix = space.tag + ":key:"
    for name in names:
        if name.startswith(space.tag + ":keyroll:"):
            days.append(name[len(space.tag + ":keyroll:") :])
        elif name.startswith(key_prefix):
            _key_id, _, rest = name[len(key_prefix) :].partition(":")
            kind, _, period = rest.partition(":")
            if kind == "spent":
                spent[period] += int(await redis.get(name) or 0)
            elif kind == "images":
                images[period] += int(await redis.get(name) or 0)
    reserved = {"reserved_micros": 0, "reserved_images": 0}
    for key_id in key_ids:
        state = await redis.hmget(KeySpace(key_id, team).state, ["reserved_micros", "reserved_images"])
        reserved["reserved_micros"] += int(state[0] or 0)
        reserved["reserved_images"] += int(state[1] or 0)
    for period_id, micros in spent.items():
        ttl = DAY_TTL_S if period_id.startswith("d") else MONTH_TTL_S if period_id.startswith("m") else None
        await redis.set(space.spent(period_id), micros, ex=ttl)
    for day, count in images.items():
        await redis.set(space.images(day), count, ex=DAY_TTL_S)
    await redis.hset(space.state, mapping=reserved)
    await _rebuild_rollups(redis, space, days)


async def _rebuild_rollups(redis: Any, space: TeamSpace, days: list[str]) -> None:
    """The team's per-model rollup of each day: the sum of its per-key rollup of that day."""
    commands = ((day, ("hgetall", space.key_rollup(day))) for day in sorted(days))
    async for day, raw in pipelined(redis, commands):
        totals: dict[str, int] = defaultdict(int)
        for name, value in raw.items():
            _, what, model = text(name).split("|", 2)
            totals[f"{model}|{what}"] += int(value)
        pipe = redis.pipeline(transaction=True)
        pipe.delete(space.rollup(day))
        if totals:
            pipe.hset(space.rollup(day), mapping=dict(totals))
        await pipe.execute()


class LayoutKeeper:
    """A gateway's view of the layout: ready once :func:`ensure_layout` has succeeded.

    Checked in the background, so that a gateway starts (and answers /healthz) while Redis is
    down; /readyz says ``layout: false`` and the key directory refuses lookups (503) until done.
    """

    def __init__(self, redis: Any, directory: KeyDirectory, retry_every_s: float = 1.0) -> None:
        self.redis = redis
        self.directory = directory
        self.retry_every_s = retry_every_s
        self._task: asyncio.Task[None] | None = None
        self._failed_once = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.directory.ready

    def start(self) -> None:
        self._task = asyncio.create_task(self._until_ready(), name="layout-upgrade")

    async def _until_ready(self) -> None:
        while True:
            try:
                await ensure_layout(self.redis)
            except Exception as exc:  # Redis down at start-up: retried, never fatal
                log.warning("store layout not checked yet: %s: %s", exc.__class__.__name__, exc)
                self._failed_once.set()
                await asyncio.sleep(self.retry_every_s)
                continue
            self.directory.ready = True
            return

    async def wait(self, timeout_s: float) -> None:
        """Wait a little for the check at start-up (a healthy Redis answers it in a millisecond).

        Not once it has failed: Redis is down, and waiting out ``timeout_s`` would only keep the
        gateway from answering /healthz (and /readyz its 503) that much longer; the check goes on
        in the background."""
        if self._task is None:
            return
        failed = asyncio.ensure_future(self._failed_once.wait())
        try:
            await asyncio.wait({self._task, failed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()

    async def aclose(self) -> None:
        await background.cancel(self._task)
