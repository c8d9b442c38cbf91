"""Out of file descriptors: a local shortage to wait out, not an upstream failure.

A call in flight holds two sockets, the caller's and the upstream's. When the worker has no
descriptor left (``EMFILE``: its open-file limit; ``ENFILE``: the whole system's), opening the
upstream connection fails before a byte is sent. That used to answer 502 ``upstream_unavailable``
and count an upstream ``connect`` error in a large burst, with a healthy upstream, on a host
whose hard limit could not hold two sockets per call plus the worker's own files. Since nothing
was sent, the call may simply try again: it waits for a
descriptor to be freed (every call that ends frees two), within its own deadline, and a warning
says the limit is too low (at most every 10 s per worker).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import time

log = logging.getLogger("gateway")

EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})
FIRST_PAUSE_S = 0.05
LONGEST_PAUSE_S = 0.5  # the most a waiting call lags behind a freed descriptor
WARN_EVERY_S = 10.0


def exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: httpx wraps aiohttp, which wraps the OSError) is
    EMFILE or ENFILE."""
    seen: BaseException | None = exc
    for _ in range(8):  # the wrappers are a few deep; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in EXHAUSTED:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Backoff:
    """The pauses of one call waiting for a descriptor: 50 ms, doubling up to 0.5 s."""

    _warned_at = -math.inf  # per process: one warning line per WARN_EVERY_S, not one per call

    def __init__(self) -> None:
        self.pause_s = FIRST_PAUSE_S
        self.waited_s = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        if now - Backoff._warned_at >= WARN_EVERY_S:
            Backoff._warned_at = now
            log.warning(
                "out of file descriptors: upstream calls wait for one to be freed; raise the "
                "open-file limit (ulimit -n, LimitNOFILE, the container's nofile) to at least "
                "2 x GATEWAY_MAX_INFLIGHT + 1024"
            )
        await asyncio.sleep(self.pause_s)
        self.waited_s += self.pause_s
        self.pause_s = min(LONGEST_PAUSE_S, 2 * self.pause_s)
