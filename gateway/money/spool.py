"""A local append-only spool for settlements that Redis could not take.

When Redis is lost after the upstream already answered, the caller still gets its images and the
settlement is appended here, then replayed into Redis when it returns. Replaying is exactly-once
because the settle script ignores a request id it has settled already; so any process may replay
any spool file (a dead replica's too), and a replay cut short is simply run again.

Locking, because several worker processes share the directory:

- every append holds an exclusive ``flock`` on its file, only for the write itself;
- one replayer at a time per directory (a non-blocking ``flock`` on ``.replay.lock``);
- a replayer never holds a file's lock across an ``await``: it copies the records out under the
  lock, settles them without it, then, under the lock again, removes exactly the records it
  settled and keeps what was appended meanwhile. Holding the lock while waiting on Redis would
  freeze every appending worker's event loop, and in its own process deadlock it outright.
- a file the replayer has emptied is unlinked (or replaced) while it holds the file's lock; an
  appender that opened the old file checks, once it has the lock, that the file is still linked,
  and opens the path again if not. Without that check its record lands in an unlinked file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger("gateway.spool")

Replayer = Callable[[dict[str, Any]], Awaitable[None]]

REPLAY_LOCK = ".replay.lock"


class RecordRefused(Exception):
    """Raised by a replayer for one record the store answered but refused (not an outage).

    The record is kept for the next round and the replay goes on with the others, so one bad
    record cannot hold back every record behind it.
    """


class RecordForeign(Exception):
    """Raised by a replayer for a record that belongs to another store (see store/store_id.py).

    The record is kept, silently: the replayer counts them (:attr:`Spool.foreign`) and reports
    them once, instead of a log line per record every round.
    """


@contextlib.contextmanager
def _locked(handle: IO[bytes], flags: int = fcntl.LOCK_EX) -> Iterator[None]:
    fcntl.flock(handle, flags)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def _still_linked(handle: IO[bytes]) -> bool:
    return os.fstat(handle.fileno()).st_nlink > 0


class Spool:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.jsonl"
        self._counted: dict[Path, tuple[int, int, int]] = {}  # path -> (inode, size, records)
        self._foreign_seen = 0
        self.foreign = 0  # records of another store kept by the last complete replay round

    def append(self, entry: dict[str, Any]) -> None:
        """Write one record durably (fsync) before the caller is answered."""
        line = orjson.dumps(entry) + b"\n"
        while True:
            with open(self.path, "ab") as handle, _locked(handle):
                if not _still_linked(handle):
                    continue  # a replayer emptied and removed it after we opened it
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
                return

    def pending(self) -> int:
        """Records waiting in every spool file of the directory.

        Counted incrementally (files only grow until a replay replaces them), so asking every
        second stays cheap while a long outage piles up records.
        """
        total = 0
        seen: dict[Path, tuple[int, int, int]] = {}
        for path in self.directory.glob("*.jsonl"):
            try:
                stat = path.stat()
                inode, size, records = self._counted.get(path, (stat.st_ino, 0, 0))
                if inode != stat.st_ino or size > stat.st_size:
                    size, records = 0, 0
                if stat.st_size > size:
                    with open(path, "rb") as handle:
                        handle.seek(size)
                        records += handle.read(stat.st_size - size).count(b"\n")
                seen[path] = (stat.st_ino, stat.st_size, records)
                total += records
            except FileNotFoundError:
                continue
        self._counted = seen
        return total

    async def replay(self, settle: Replayer) -> int:
        """Replay every spool file in the directory; returns how many records went to Redis.

        Records are removed from a file only once settled. If ``settle`` raises anything but
        :class:`RecordRefused` (Redis is down again), the round stops, the records settled so
        far are removed, and the exception is raised; the rest waits for the next round.
        """
        self.directory.mkdir(parents=True, exist_ok=True)  # someone may have cleaned it up
        with open(self.directory / REPLAY_LOCK, "ab") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is replaying the directory now; next round
            replayed, self._foreign_seen = 0, 0
            for path in sorted(self.directory.glob("*.jsonl")):
                replayed += await self._replay_file(path, settle)
            self.foreign = self._foreign_seen
            return replayed  # closing the file releases the lock, on errors too

    async def _replay_file(self, path: Path, settle: Replayer) -> int:
        snapshot = _read_locked(path)
        if snapshot is None:
            return 0
        lines = snapshot.splitlines(keepends=True)
        kept: list[bytes] = []
        replayed = 0
        failure: BaseException | None = None
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                self._quarantine(path, line)
                continue
            try:
                await settle(entry)
                replayed += 1
            except RecordRefused as exc:
                log.error("spooled settlement %s refused, kept: %s", entry.get("request_id"), exc)
                kept.append(_terminated(line))
            except RecordForeign:
                self._foreign_seen += 1
                kept.append(_terminated(line))
            except Exception as exc:  # an outage: keep this record and the rest for later
                kept.extend(_terminated(rest) for rest in lines[index:])
                failure = exc
                break
        _remove_settled(path, len(snapshot), kept)
        if replayed:
            log.info("replayed %d spooled settlements from %s", replayed, path.name)
        if failure is not None:
            raise failure
        return replayed

    def _quarantine(self, path: Path, line: bytes) -> None:
        """A line that is not JSON (a write cut short by a crash) is set aside, never retried."""
        with open(path.with_suffix(".corrupt"), "ab") as handle:
            handle.write(_terminated(line))
        log.error("unreadable spool line moved to %s", path.with_suffix(".corrupt").name)


def _terminated(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"


def _read_locked(path: Path) -> bytes | None:
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None
    with handle, _locked(handle):
        return handle.read()


def _remove_settled(path: Path, consumed: int, kept: list[bytes]) -> None:
    """Drop the first ``consumed`` bytes of ``path`` but ``kept``; keep what was appended since.

    The file is replaced (write, fsync, rename) rather than rewritten in place, so a crash at any
    point leaves either the old file or the new one: at worst records are replayed again, which
    the settle script ignores.
    """
    with open(path, "rb") as handle, _locked(handle):
        handle.seek(consumed)
        rest = b"".join(kept) + handle.read()
        if not rest:
            path.unlink()
            return
        if len(rest) == os.fstat(handle.fileno()).st_size:
            return  # nothing was settled
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "wb") as new:
            new.write(rest)
            new.flush()
            os.fsync(new.fileno())
        os.replace(temporary, path)
