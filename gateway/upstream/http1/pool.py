"""Keep-alive connections per origin, at most ``max_connections`` open at once.

A *slot* is the right to hold one connection (open, or being opened). A caller takes an idle
connection of its origin (the most recently used: the one least likely to have been closed by
the server), or a free slot to open one, or waits its turn: waiters are served first come,
first served, each handed a connection or a slot directly, so a newcomer cannot overtake them.

An idle connection is never handed out once the server has closed it (``connection_lost`` or a
closing transport), and is closed after ``keepalive_s`` unused (aiohttp's connector: 30 s).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.upstream.http1.connection import Connection
from gateway.upstream.transport import PoolClosed

Origin = tuple[str, str, int]  # scheme, host, port
Waiter = tuple[Origin, "asyncio.Future[Connection | None]"]  # None: a slot to open one with


class Pool:
    def __init__(self, max_connections: int, keepalive_s: float = 30.0) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.opened = 0  # slots taken
        self.live: set[Connection] = set()
        self._idle: dict[Origin, list[Connection]] = {}
        self._waiters: deque[Waiter] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def idle(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def acquire(self, origin: Origin, connect: Callable[[], Awaitable[Connection]]) -> Connection:
        """A usable connection to ``origin``: idle, new (``connect``), or the next one freed."""
        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            conn = self._reuse(origin)
            if conn is not None:
                return conn
            if self.opened < self.max_connections and not self._waiters:
                self.opened += 1
                return await self._open(connect)
            if self._evict_other(origin):
                continue
            got = await self._wait(origin)
            if got is None:
                return await self._open(connect)
            if got.usable():
                return got
            got.abort()  # closed while handed over: its slot has gone on; queue again

    async def _open(self, connect: Callable[[], Awaitable[Connection]]) -> Connection:
        """Open a connection with a slot already taken; the slot is given back if it fails."""
        try:
            conn = await connect()
        except BaseException:
            self._free_slot()
            raise
        if self._closed:
            if conn.transport is not None:
                conn.transport.abort()
            self._free_slot()
            raise PoolClosed("the connection pool is closed")
        conn.counted = True  # from now on, its end frees the slot (forget)
        self.live.add(conn)
        return conn

    def _reuse(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest_kept = asyncio.get_running_loop().time() - self.keepalive_s
        while idle:
            conn = idle.pop()
            if not conn.usable():
                conn.abort()
            elif conn.idle_since < oldest_kept:
                conn.close()
            else:
                return conn
        return None

    def _evict_other(self, origin: Origin) -> bool:
        """At the limit with idle connections to other origins: close one to make room."""
        for other, idle in self._idle.items():
            if other != origin and idle:
                idle.pop(0).close()
                return True
        return False

    async def _wait(self, origin: Origin) -> Connection | None:
        waiter: Waiter = (origin, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        future = waiter[1]
        try:
            return await future
        except asyncio.CancelledError:
            # A cancelled future stays in the queue, skipped when its turn comes (_next_waiter):
            # removing it here would cost O(n) per waiter when thousands time out together.
            if future.done() and not future.cancelled():  # handed something just before: pass it on
                got = future.result()
                if got is None:
                    self._free_slot()
                else:
                    self.release(got)
            raise

    def _next_waiter(self) -> Waiter | None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter[1].done():
                return waiter
        return None

    def release(self, conn: Connection) -> None:
        """``conn`` finished an exchange and may serve another: to a waiter, or kept idle."""
        if self._closed or not conn.usable():
            conn.abort()
            return
        waiter = self._next_waiter()
        if waiter is not None:
            if waiter[0] == conn.origin:
                waiter[1].set_result(conn)
                return
            self._waiters.appendleft(waiter)  # it wants another origin: close this, it gets the slot
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(self.keepalive_s, self._expire)

    def forget(self, conn: Connection) -> None:
        """``conn`` is closed or closing (idempotent): its slot is free."""
        if not conn.counted:
            return
        conn.counted = False
        self.live.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        self._free_slot()

    def _free_slot(self) -> None:
        waiter = self._next_waiter()
        if waiter is not None:
            waiter[1].set_result(None)  # the slot passes straight to it
        else:
            self.opened -= 1

    def _expire(self) -> None:
        """Close the connections idle for ``keepalive_s``; come back while any are left."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        soonest = None
        for idle in list(self._idle.values()):
            while idle and idle[0].idle_since <= now - self.keepalive_s:
                idle[0].close()  # forget() takes it off the list
            if idle:
                soonest = min(soonest or idle[0].idle_since, idle[0].idle_since)
        if soonest is not None and not self._closed:
            self._sweep = loop.call_at(soonest + self.keepalive_s, self._expire)

    async def aclose(self) -> None:
        """Close every connection, idle or not; callers still waiting get :class:`PoolClosed`."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(PoolClosed("the connection pool is closed"))
        for conn in list(self.live):
            conn.abort()
        self._idle.clear()
