"""One alert sender however many workers and replicas run: a lock in Redis.

``SET NX PX`` takes the lock; the holder renews it with a compare-and-renew script
(gateway/lua/leader.lua) before each POST and every poll, and releases it at shutdown, so a
stopped gateway hands over at once and a killed one after ``lifetime_ms``. A process that paused
longer than the lifetime finds it lost at its next renewal and stops sending.
"""

from __future__ import annotations

import secrets

from gateway.store import scripts
from gateway.store.keyspace import ALERT_SENDER_LOCK
from gateway.store.protocol import Redis

LIFETIME_MS = 15_000


class LeaderLock:
    def __init__(self, redis: Redis, owner: str, lifetime_ms: int = LIFETIME_MS) -> None:
        self.redis = redis
        self.token = f"{owner}-{secrets.token_hex(6)}"  # unique even for two senders in one process
        self.lifetime_ms = lifetime_ms
        self.held = False

    async def hold(self) -> bool:
        """Take the lock if free, or renew it if already ours; whether this process holds it."""
        taken = await self.redis.set(ALERT_SENDER_LOCK, self.token, nx=True, px=self.lifetime_ms)
        self.held = bool(taken) or await self.renew()
        return self.held

    async def renew(self) -> bool:
        """Extend the lock if it is still ours; False if another process holds it (or nobody)."""
        reply = await scripts.LEADER(self.redis, [ALERT_SENDER_LOCK], ["renew", self.token, self.lifetime_ms])
        self.held = int(reply) == 1
        return self.held

    async def release(self) -> None:
        if self.held:
            await scripts.LEADER(self.redis, [ALERT_SENDER_LOCK], ["release", self.token, 0])
            self.held = False
