"""Which Redis an admin command reads or writes, said on stderr, and how it connects.

The admin commands talk to Redis directly, so they work with no gateway running. The store is:

1. ``GATEWAY_REDIS_URL`` when set;
2. else the embedded Redis of the gateway running on ``GATEWAY_STATE_DIR`` (its lock file names
   the port, the 0600 password file the password);
3. else the embedded Redis's data in ``GATEWAY_STATE_DIR``, started for the command and stopped
   after it.

With none of these, a read command fails, saying where it looked: started from the wrong folder,
it would otherwise read a new, empty store and report zero spend as if that were true. A write
command (``keys create``, ``prices set``) may create the embedded store, because issuing keys
before the first ``make run`` is legitimate; it says on stderr that it created a new one, and
where, so a key issued into the wrong folder is noticed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from gateway.admin.layout_upgrade import ensure_layout
from gateway.cli.common import CommandError
from gateway.core.settings import load_settings
from gateway.store import client as redis_client
from gateway.store import embedded as embedded_redis

T = TypeVar("T")


class Access(Enum):
    READ = "read"
    WRITE = "write"


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***``, for printing."""
    return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


def _no_state(state_dir: Path) -> CommandError:
    where = embedded_redis.redis_directory(state_dir)
    return CommandError(
        f"no gateway state found: GATEWAY_REDIS_URL is not set and {where} holds no embedded Redis "
        "data. Run this where the gateway runs (make run keeps its state in ./var), or point it at "
        "the right store with GATEWAY_STATE_DIR=/path/to/var or GATEWAY_REDIS_URL=redis://..."
    )


def _say(where: str) -> None:
    print(f"gateway: using {where}", file=sys.stderr)


@contextlib.contextmanager
def store_url(access: Access) -> Iterator[str]:
    """The URL of the store the command should use; an embedded one started for it is stopped after."""
    settings = load_settings()
    if settings.redis_url:
        _say(f"{masked(settings.redis_url)} (GATEWAY_REDIS_URL)")
        yield settings.redis_url
        return
    directory = embedded_redis.redis_directory(settings.state_dir)
    running = embedded_redis.running_url(settings.state_dir)
    if running is not None:
        _say(f"the embedded Redis in {directory}, of the gateway running there")
        yield running
        return
    existed = embedded_redis.has_data(settings.state_dir)
    if not existed and access is Access.READ:
        raise _no_state(settings.state_dir)
    redis = embedded_redis.start(settings.state_dir)
    try:
        if existed:
            _say(f"the embedded Redis in {directory}, started for this command")
        else:
            _say(f"a NEW embedded Redis in {directory}: no gateway state was there")
        yield redis.url
    finally:
        redis.stop()


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[Any]:
    client = await redis_client.connect(url)
    try:
        yield client
    finally:
        await client.aclose()


def run_with_redis(action: Callable[[Any], Awaitable[T]], access: Access = Access.READ) -> T:
    """Run ``action(redis)`` against the admin store and return its result."""

    async def go(url: str) -> T:
        async with connected(url) as redis:
            # Keys are read in today's layout: a store of the release before is moved first.
            await ensure_layout(redis)
            return await action(redis)

    with store_url(access) as url:
        return asyncio.run(go(url))
