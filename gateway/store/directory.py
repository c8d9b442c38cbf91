"""Which team a key belongs to: the one fact needed before a key's state can be named.

A key's state lives under its team's hash tag (store/keyspace.py), but a token names only its key_id.
The directory entry ``gw:{<key_id>}:key`` holds the team, and a key never changes team, so each
process keeps what it has read: the hot path pays one extra round trip per key per process, once.
Unknown key_ids are not remembered (a caller guessing key_ids must not fill the memory).
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from gateway.store.keyspace import KeySpace, directory_entry
from gateway.store.pipelined import pipelined
from gateway.store.protocol import Redis, text

MAX_REMEMBERED = 100_000


class LayoutNotReady(RedisError):
    """The store's layout is not confirmed yet (admin/layout_upgrade.py): answered like Redis down, 503."""


class KeyDirectory:
    """key_id -> team, read from Redis once per process and key.

    ``ready`` is False in a gateway until its store's layout is confirmed (admin/layout_upgrade.py):
    until then every lookup raises :class:`LayoutNotReady`, so no call is served from a store of
    the release before that has not been moved yet.
    """

    def __init__(self, redis: Redis, max_remembered: int = MAX_REMEMBERED, ready: bool = True) -> None:
        self.redis = redis
        self.max_remembered = max_remembered
        self.ready = ready
        self._teams: dict[str, str] = {}
        self._reading: dict[str, asyncio.Future[str | None]] = {}

    async def team_of(self, key_id: str) -> str | None:
        """The key's team; None for a key_id never issued. Raises RedisError like any command."""
        if not self.ready:
            raise LayoutNotReady("the store's layout is not checked yet")
        team = self._teams.get(key_id)
        if team is not None:
            return team
        pending = self._reading.get(key_id)
        if pending is not None:  # a burst for a key not seen yet: one read, shared
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._reading[key_id] = future
        try:
            team = await read_team(self.redis, key_id)
            future.set_result(team)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a burst's waiters may all be gone
            raise
        finally:
            del self._reading[key_id]
        if team is not None:
            if len(self._teams) >= self.max_remembered:
                self._teams.clear()
            self._teams[key_id] = team
        return team

    async def space_of(self, key_id: str) -> KeySpace | None:
        team = await self.team_of(key_id)
        return None if team is None else KeySpace(key_id, team)


async def read_team(redis: Redis, key_id: str) -> str | None:
    raw = await redis.hget(directory_entry(key_id), "team")
    return None if raw is None else text(raw)


async def spaces_of(redis: Redis, key_ids: list[str]) -> dict[str, KeySpace]:
    """key_id -> its KeySpace, for many keys in a few round trips (keys never issued are left out)."""
    commands = ((k, ("hget", directory_entry(k), "team")) for k in key_ids)
    return {
        key_id: KeySpace(key_id, text(team))
        async for key_id, team in pipelined(redis, commands)
        if team is not None
    }
