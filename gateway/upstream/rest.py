"""Which upstream channels rest: shared by every replica through Redis, read from a local copy.

A channel that fails ``threshold`` times in a row (counted across replicas), or refuses the
gateway's key or balance, or answers 429, *rests*: no call is sent to it until its rest is over
(the cooldown, or the 429's Retry-After). Then it is on *probation*: one live call at a time
(claimed in Redis, so one across the cluster) tests it; it rejoins when a call succeeds there, and
rests again at once if that call fails.

The hot path never waits for Redis: it reads this process's copy (:meth:`RestBoard.state`),
refreshed every second, like the price table (gateway/money/pricing.py). A failure or success is
applied to the copy at once (a channel that just failed rests at once in the process that saw
it) and sent to Redis in the background, so the other replicas learn it at their next refresh.
Only a probation's claim asks Redis on the call's path, and only after a rest. With Redis
unreachable, each process keeps deciding alone with what it last knew.

Redis' clock measures every rest (its script answers its own time): a replica whose clock is off
still rests a channel exactly as long as the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.core import background
from gateway.store import scripts
from gateway.store.keyspace import CHANNEL_FAILURES, CHANNEL_RESTS, channel_probe
from gateway.store.protocol import Redis, text

log = logging.getLogger("gateway.channels")

READY, RESTING, PROBATION = "ready", "resting", "probation"


@dataclass(frozen=True)
class Rest:
    until: float  # on this process's monotonic clock
    reason: str  # failures, auth, insufficient_balance, rate_limited, ...


class RestBoard:
    """This process's view of which channels rest, and what it tells the others."""

    def __init__(
        self,
        redis: Redis,
        threshold: int,
        cooldown_s: float,
        probe_ttl_s: float,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.threshold, self.cooldown_s = redis, threshold, cooldown_s
        self.probe_ttl_s, self.refresh_s, self.clock = probe_ttl_s, refresh_s, clock
        self._shared: dict[str, Rest] = {}  # as Redis had it at the last refresh
        self._local: dict[str, Rest] = {}  # decided here, kept until a success lifts it
        self._failures: dict[str, int] = {}  # in a row, seen here
        self._shared_failures: dict[str, int] = {}  # in a row, across replicas, at the last refresh
        self._probing: set[str] = set()  # the channels whose one live call this process holds
        self._lost: dict[str, float] = {}  # when another process was found holding it
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    # -- reading (the hot path) --------------------------------------------------------------------

    def rest_of(self, name: str) -> Rest | None:
        """The channel's rest (the later of the shared one and this process's), if any."""
        shared, local = self._shared.get(name), self._local.get(name)
        if shared is None or local is None:
            return shared or local
        return shared if shared.until >= local.until else local

    def state(self, name: str) -> str:
        rest = self.rest_of(name)
        if rest is None:
            return READY
        return RESTING if rest.until > self.clock() else PROBATION

    def seconds_left(self, name: str) -> float:
        """How long the channel still rests (0 if it does not)."""
        rest = self.rest_of(name)
        return max(0.0, rest.until - self.clock()) if rest is not None else 0.0

    async def claim_probe(self, name: str) -> bool:
        """Whether this call may be the one live call testing ``name`` after its rest. Redis is
        asked at most once per refresh period while another process holds the test, and never
        while this process does."""
        if name in self._probing:
            return False
        lost = self._lost.get(name)
        if lost is not None and self.clock() - lost < self.refresh_s:
            return False
        try:
            reply = await self._script("probe", name, int(self.probe_ttl_s * 1000))
        except Exception as exc:  # Redis unreachable: one live call per process
            log.debug("channel %s: probe not claimed in Redis: %s", name, exc.__class__.__name__)
            claimed = 1
        else:
            claimed = int(reply["probe"])
        if claimed == 2:  # Redis has no rest for it: a success elsewhere lifted it, or ours was lost
            self._shared.pop(name, None)
            if name not in self._local:
                return True
            claimed = 1
        if claimed == 1:
            self._probing.add(name)
            return True
        self._lost[name] = self.clock()
        return False

    # -- what calls found ------------------------------------------------------------------------

    def failed(self, name: str, reason: str, rest_s: float | None = None) -> None:
        """A call failed there. ``rest_s``: rest at once, this long (a refused key or balance: the
        cooldown; a 429: its Retry-After); else it rests at ``threshold`` failures in a row, or at
        once if it was on probation."""
        count = self._failures[name] = self._failures.get(name, 0) + 1
        self._probing.discard(name)
        self._lost.pop(name, None)
        if rest_s is not None or count >= self.threshold or self.state(name) == PROBATION:
            self._rest_here(name, self.cooldown_s if rest_s is None else rest_s, reason)
        rest_ms = 0 if rest_s is None else max(1, int(rest_s * 1000))
        self._send(self._send_failure(name, reason, rest_ms))

    def succeeded(self, name: str) -> None:
        """A call got a proper answer there: its failures in a row end; a rest that is over is
        lifted (one still running is not cut short by a call that started before it)."""
        # Redis' count is cleared if this process added to it, or another did (its last copy says).
        tell = bool(self._failures.pop(name, 0)) | bool(self._shared_failures.pop(name, 0))
        self._probing.discard(name)
        self._lost.pop(name, None)
        if self.state(name) == PROBATION:
            self._shared.pop(name, None)
            self._local.pop(name, None)
            tell = True
        if tell:
            self._send(self._script_quietly("ok", name))

    def _rest_here(self, name: str, rest_s: float, reason: str) -> None:
        until = self.clock() + rest_s
        current = self._local.get(name)
        if current is None or current.until < until:
            self._local[name] = Rest(until, reason)
        self._failures.pop(name, None)
        log.warning("channel %s rests for %.0f s (%s)", name, rest_s, reason)

    async def _send_failure(self, name: str, reason: str, rest_ms: int) -> None:
        args = (self.threshold, int(self.cooldown_s * 1000), rest_ms, reason)
        try:
            reply = await self._script("fail", name, *args)
        except Exception as exc:
            log.warning("channel %s: failure not shared (Redis: %s)", name, exc.__class__.__name__)
            return
        until_ms = int(reply["until"])
        if until_ms:  # the count across replicas reached the threshold: rest here too, at once
            self._shared[name] = Rest(self._local_time(until_ms, int(reply["now"])), reason)

    async def _script_quietly(self, action: str, name: str) -> None:
        try:
            await self._script(action, name)
        except Exception as exc:
            log.warning("channel %s: %s not shared (Redis: %s)", name, action, exc.__class__.__name__)

    async def _script(self, action: str, name: str, *args: int | str) -> dict[str, Any]:
        keys = [CHANNEL_RESTS, CHANNEL_FAILURES, channel_probe(name)]
        return scripts.named(await scripts.CHANNEL_REST(self.redis, keys, [action, name, *args]))

    def _send(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _local_time(self, redis_ms: int, redis_now_ms: int) -> float:
        return self.clock() + (redis_ms - redis_now_ms) / 1000

    # -- the copy of the shared state --------------------------------------------------------------

    async def refresh(self) -> None:
        reply = await self._script("read", "")
        now_ms, rests, failures = int(reply["now"]), reply["rests"], reply["failures"]
        shared: dict[str, Rest] = {}
        for i in range(0, len(rests) - 1, 2):
            until_ms, _, reason = text(rests[i + 1]).partition(":")
            if until_ms.isdigit():
                shared[text(rests[i])] = Rest(self._local_time(int(until_ms), now_ms), reason)
        self._shared = shared
        self._shared_failures = {
            text(failures[i]): int(failures[i + 1]) for i in range(0, len(failures) - 1, 2)
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="channel-rests")

    async def flush(self) -> None:
        """Wait until what this process has to tell Redis is sent (or given up on)."""
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def stop(self) -> None:
        await background.cancel(self._task)
        try:
            async with asyncio.timeout(2):  # a failure seen just before stopping still reaches the others
                await self.flush()
        except TimeoutError:
            for task in list(self._sending):
                await background.cancel(task)

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # Redis down: keep deciding with what this process knows
                log.debug("channel rests not refreshed: %s", exc.__class__.__name__)
            await asyncio.sleep(self.refresh_s)

    def states(self, names: Collection[str]) -> dict[str, dict[str, Any]]:
        """Each channel's state as /readyz shows it."""
        found: dict[str, dict[str, Any]] = {}
        for name in names:
            rest, state = self.rest_of(name), self.state(name)
            found[name] = {"state": state}
            if rest is not None:
                found[name].update(reason=rest.reason, rest_left_s=round(self.seconds_left(name), 1))
        return found
