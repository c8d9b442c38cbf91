"""A read timeout that does not count the worker's own backlog, checked by one watch per loop.

:class:`patient_timeout` is what gateway/store/wire.py puts around every Redis read: like
``asyncio.timeout(seconds)``, except that time the event loop itself spent behind (a burst of
thousands of calls on one worker) does not count against Redis. Each check finds the loop late by
``late`` seconds past when it should have run; a read that came due meanwhile is given as long
again (at most the time it has been waiting), within :data:`MAX_PATIENCE` timeouts in all. A
silent Redis on a worker that is not behind still times out on time, give or take one check.

Why a watch rather than a timer per read: every call makes two reads, and a timer per read
(``asyncio.Timeout`` plus ``loop.call_at``, and cancelling it) costs several times what adding to
and removing from the watch's set does; one check every :data:`TICK_S` serves every read in
flight.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

# A check that runs later than this was held up by the worker's own loop, not by Redis.
LOOP_LAG_S = 0.1
# However far behind the worker is, a read gives up after this many timeouts.
MAX_PATIENCE = 15
TICK_S = 0.1  # how often reads in flight are checked: a timeout fires up to this much late


class patient_timeout:  # noqa: N801 - used like asyncio.timeout, named like it
    """``async with patient_timeout(seconds):`` raises ``TimeoutError`` as ``asyncio.timeout``
    would, but not for time the loop spent behind (see the module's docstring)."""

    __slots__ = ("seconds", "task", "started", "due", "give_up_at", "fired", "cancelling", "watch")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # an ``async with`` runs in a task
        self.task, self.cancelling, self.fired = task, task.cancelling(), False
        self.started = now = loop.time()
        self.due, self.give_up_at = now + self.seconds, now + self.seconds * MAX_PATIENCE
        self.watch = _watch_of(loop)
        self.watch.add(self)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.watch.entries.discard(self)
        # asyncio.Timeout's rule: the cancel was ours unless someone else's is pending too.
        if self.fired and self.task.uncancel() <= self.cancelling and kind is asyncio.CancelledError:
            raise TimeoutError from error

    def fire(self) -> None:
        self.fired = True
        self.watch.entries.discard(self)
        self.task.cancel()


class _Watch:
    """Checks the reads in flight on one loop every :data:`TICK_S`, while there are any."""

    __slots__ = ("loop", "entries", "handle", "expected")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.entries: set[patient_timeout] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.expected = 0.0  # when the next check should run

    def add(self, entry: patient_timeout) -> None:
        self.entries.add(entry)
        if self.handle is None:
            self._schedule(self.loop.time())

    def _schedule(self, now: float) -> None:
        self.expected = now + TICK_S
        self.handle = self.loop.call_at(self.expected, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        late = now - self.expected
        for entry in [entry for entry in self.entries if now >= entry.due]:
            behind = min(late, now - entry.started)  # the loop's lag while this read waited
            if behind > LOOP_LAG_S and now < entry.give_up_at:
                entry.due = now + behind
            else:
                entry.fire()
        if self.entries:
            self._schedule(now)
        else:
            self.handle = None


_last: tuple[asyncio.AbstractEventLoop, _Watch] | None = None


def _watch_of(loop: asyncio.AbstractEventLoop) -> _Watch:
    """The loop's watch; one loop per worker process, so the last one is kept at hand."""
    global _last
    if _last is None or _last[0] is not loop:
        _last = (loop, _Watch(loop))
    return _last[1]
