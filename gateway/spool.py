"""A local append-only spool for settlements that Redis could not take.

When Redis is lost after the upstream already answered, the caller still gets its images and the
settlement is appended here, then replayed into Redis when it returns. Replaying is exactly-once
because the settle script ignores a request id it has settled already; so any process may replay
any spool file (a dead replica's too), and a replay cut short is simply run again.

Every append and every replay holds an exclusive ``flock`` on the file: several worker processes
share the directory, and without the lock a replay racing an append loses records.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("gateway.spool")

Replayer = Callable[[dict[str, Any]], Awaitable[None]]


class Spool:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry) + b"\n"
        with open(self.path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def pending(self) -> int:
        """Records waiting in every spool file of the directory."""
        total = 0
        for path in self.directory.glob("*.jsonl"):
            try:
                with open(path, "rb") as handle:
                    total += sum(1 for line in handle if line.strip())
            except FileNotFoundError:
                continue
        return total

    async def replay(self, settle: Replayer) -> int:
        """Replay every spool file in the directory; returns how many records went to Redis.

        A file is emptied only after all its records were settled; if Redis fails midway the
        file stays as it is and the next replay starts over (duplicates are ignored by Redis).
        """
        replayed = 0
        for path in sorted(self.directory.glob("*.jsonl")):
            replayed += await self._replay_file(path, settle)
        return replayed

    async def _replay_file(self, path: Path, settle: Replayer) -> int:
        try:
            handle = open(path, "r+b")
        except FileNotFoundError:
            return 0
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # someone is appending or replaying it now; next round
            try:
                lines = [line for line in handle.read().splitlines() if line.strip()]
                for line in lines:
                    await settle(orjson.loads(line))
                handle.truncate(0)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        if path != self.path:
            path.unlink(missing_ok=True)
        if lines:
            log.info("replayed %d spooled settlements from %s", len(lines), path.name)
        return len(lines)
