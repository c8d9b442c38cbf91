"""A bound on the Redis connections one worker opens: commands share a few connections.

redis-py's plain pool opens one connection per concurrent command, so a burst of calls on one
worker opened thousands of connections at once: the connects plus AUTH/HELLO missed their
timeout and most of the burst got 503 while Redis was healthy. Here every connection taken from a
pool first takes one of ``size`` slots; a command that finds all slots busy waits its turn (FIFO)
instead of opening another connection. Connections are reused, so a burst costs ``size``
connects, not thousands.

Why a slot in front of redis-py's plain pool rather than its ``BlockingConnectionPool``: the
uncontended path is one ``Semaphore.acquire`` that does not suspend, where the blocking pool
takes a condition, a timeout and a lock per command; and its wait is one a healthy but busy
Redis does not miss, where the blocking pool's short deadline failed commands of a burst that
Redis would have answered (bench/README.md has the side-by-side measurement). Not an
auto-pipelining multiplexer: Redis is not what limits a worker; redis-py's packing and parsing in
Python is, and a multiplexer in Python would not remove it.

Redis really down must stay a fast 503, not a queue that holds requests for seconds: once a
connect has failed and none has succeeded since, a command that finds every slot busy fails at
once instead of waiting (a free slot still lets it try, which is how recovery is noticed).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from gateway.store.wire import fast

DEFAULT_MAX_CONNECTIONS = 64
# How long a command waits for a slot while Redis answers. Long on purpose: a healthy Redis
# must never look like an outage, and a burst through 64 connections on a loaded machine takes
# seconds to drain; with Redis down, waiting ends at once (``unreachable``), not after this. A
# shorter wait refused calls of a burst on one starved worker while Redis was idle: a wait this
# long only ever happens when the worker itself is the bottleneck, and then a late answer beats a
# 503 that blames the store. It matches the upstream timeout's scale (120 s default).
SLOT_WAIT_S = 120.0

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


class CommandSlots:
    """At most ``size`` commands (or pipelines) hold a Redis connection at once; others queue."""

    def __init__(self, size: int, wait_s: float = SLOT_WAIT_S) -> None:
        if size < 1:
            raise ValueError("the Redis connection bound must be at least 1")
        self.size = size
        self.wait_s = wait_s
        self.unreachable = False  # the last connect failed and none has succeeded since
        self._free = asyncio.Semaphore(size)

    async def acquire(self) -> None:
        """Take a slot: at once if one is free, else wait up to ``wait_s`` (not when Redis is down)."""
        if not self._free.locked():
            await self._free.acquire()  # a free slot: returns without suspending
            return
        if self.unreachable:
            raise RedisConnectionError(
                "Redis is unreachable and all connections are busy trying it; not queueing"
            )
        try:
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            raise RedisConnectionError(
                f"no Redis connection became free within {self.wait_s:g} s ({self.size} in use)"
            ) from None

    def release(self) -> None:
        self._free.release()

    def outcome(self, error: BaseException | None) -> None:
        """Record whether reaching Redis worked, for the fail-fast rule of ``acquire``."""
        if error is None:
            self.unreachable = False
        elif isinstance(error, OUTAGE_ERRORS):
            self.unreachable = True

    @property
    def in_use(self) -> int:
        return self.size - self._free._value


class _SlotMixin:
    """Puts a ``CommandSlots`` in front of a redis-py pool's get_connection / release.

    get_connection is redis-py's own, less its observability counters (not used here): taking
    it whole keeps the slot accounting exact, one ``release`` per successful ``get_connection``,
    including when connecting fails and the connection goes back to the pool.
    """

    slots: CommandSlots
    _lock: asyncio.Lock
    connection_kwargs: dict[str, Any]

    def _share_driver_info(self) -> None:
        """One ``DriverInfo`` (the name and version sent by CLIENT SETINFO) for the pool's connections.

        Left to itself, redis-py builds one per connection, reading the installed package's
        metadata each time: a noticeable part of every worker's start, where all the connections
        are opened, and again whenever Redis comes back after an outage.
        """
        self.connection_kwargs.setdefault("driver_info", DriverInfo())

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        await self.slots.acquire()
        try:
            async with self._lock:
                connection = self.get_available_connection()  # type: ignore[attr-defined]
        except BaseException:
            self.slots.release()
            raise
        try:
            await self.ensure_connection(connection)  # type: ignore[attr-defined]
        except BaseException as exc:
            self.slots.outcome(exc)
            await self.release(connection)  # gives the slot back too
            raise
        self.slots.outcome(None)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)  # type: ignore[misc]
        finally:
            self.slots.release()


def _without_maintenance_notifications(kwargs: dict[str, Any]) -> dict[str, Any]:
    """redis-py 8 speaks RESP3 and then turns "maintenance notifications" (Redis Enterprise's
    announced failovers) to ``"auto"``, which also switches off its check that a pooled connection
    is still open before it is used: after a Redis restart or a failover, every pooled connection
    failed its next command once (up to ``max_connections`` 503s per worker). Off, the check runs
    and a dropped connection is replaced before the command is sent."""
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False), **kwargs}


class BoundedPool(_SlotMixin, ConnectionPool):
    """redis-py's plain pool, never more than ``max_connections`` open, callers waiting their turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **_without_maintenance_notifications(kwargs))
        self.slots = CommandSlots(self.max_connections)
        self.connection_class = fast(self.connection_class)
        self._share_driver_info()


class BoundedSentinelPool(_SlotMixin, SentinelConnectionPool):
    """The same bound for the connections to the master the sentinels name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **_without_maintenance_notifications(kwargs))  # type: ignore[no-untyped-call]
        self.slots = CommandSlots(self.max_connections)
        self.connection_class = fast(self.connection_class)
        self._share_driver_info()
