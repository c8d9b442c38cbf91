"""The audit trail: every change, when, by whom (``actor``), through what (``via``), on what.

Each entry is written twice: one JSON line on stdout (whatever the log level, as before: log
shippers keep it) and one entry of the Redis stream ``gw:audit``, so that it survives the
process and can be read back (``GET /admin/v1/audit``, ``gateway audit list``) on any replica.
The stream is trimmed by age at every append (``XADD ... MINID``, exact: changes are few, and an
approximate trim keeps old entries that share a node with new ones): entries older than
``GATEWAY_AUDIT_RETENTION_DAYS`` go.

``actor`` is a named credential's name, ``admin-token`` for the root ``GATEWAY_ADMIN_TOKEN``, the
person's email (or name) for a single sign-on session, the OS user for the CLI; ``via`` is
``api``, ``console`` or ``cli``. The functions here take no token: an entry never holds a secret.

A change whose entry cannot be stored (Redis failing right after the change succeeded) keeps its
log line, and a warning says the entry was not stored; the change itself is not undone.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any

import orjson

from gateway.store.client import REDIS_ERRORS
from gateway.store.keyspace import AUDIT, ROOT_USE
from gateway.store.protocol import Redis

log = logging.getLogger("gateway.audit")
DAY_MS = 86_400_000
MAX_LIST = 1000
# A read with the root token is audited once per address and this many seconds: its every use
# is on record, without a script polling with it filling the trail.
ROOT_USE_WINDOW_S = 60


@dataclass(frozen=True)
class AuditEntry:
    action: str
    actor: str
    via: str
    target: dict[str, Any] = field(default_factory=dict)
    client: str | None = None
    ts_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def line(self) -> dict[str, Any]:
        """The stdout line: ``ts`` in seconds, ``audit`` the action, then who and what."""
        head: dict[str, Any] = {"ts": self.ts_ms / 1000, "audit": self.action}
        if self.client is not None:
            head["client"] = self.client
        return {**head, "via": self.via, "actor": self.actor, **self.target}

    def stored(self) -> bytes:
        return orjson.dumps(
            {
                "ts_ms": self.ts_ms,
                "action": self.action,
                "actor": self.actor,
                "via": self.via,
                "client": self.client,
                "target": self.target,
            }
        )


def write_line(fields: dict[str, Any]) -> None:
    """One JSON line on stdout, in one write: lines from several workers sharing stdout stay whole."""
    line = memoryview(orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE))
    while line:
        line = line[os.write(1, line) :]


async def store(redis: Redis, entry: AuditEntry, retention_days: int) -> bool:
    """Append ``entry`` to the stream, trimming what is past the retention; False if Redis failed."""
    oldest = int(time.time() * 1000) - retention_days * DAY_MS
    try:
        await redis.xadd(AUDIT, {"entry": entry.stored()}, minid=str(max(0, oldest)), approximate=False)
    except REDIS_ERRORS as exc:
        log.warning("audit entry not stored in Redis (%s): %s", type(exc).__name__, entry.line())
        return False
    return True


async def record(redis: Redis, entry: AuditEntry, retention_days: int, log_line: bool = True) -> bool:
    """The log line (unless ``log_line`` is False: the CLI's stdout is its output) and the stored entry."""
    if log_line:
        write_line(entry.line())
    return await store(redis, entry, retention_days)


async def first_root_use(redis: Redis, client: str) -> bool:
    """Whether this is the root token's first use from ``client`` in the window (then audit it)."""
    return bool(await redis.set(f"{ROOT_USE}:{client}", b"1", nx=True, ex=ROOT_USE_WINDOW_S))


def parse_moment(text: str | None, end_of_day: bool = False) -> int | None:
    """A UTC day (``2026-11-30``: its first ms, or its last with ``end_of_day``) or an ISO 8601
    time with its offset, in ms since the epoch; None for nothing. ValueError says what is wrong."""
    if text is None or text == "":
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, dtime.max if end_of_day else dtime.min, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError
    except ValueError:
        raise ValueError(
            "must be a day (2026-11-30) or a time with its offset (2026-11-30T18:00:00+01:00)"
        ) from None
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A stored entry as the API and the CLI show it."""
    data = orjson.loads(fields.get(b"entry", b"{}"))
    ts_ms = int(data.get("ts_ms") or entry_id.split(b"-")[0])
    return {
        "id": entry_id.decode(),
        "time": _iso(ts_ms),
        "action": data.get("action", ""),
        "actor": data.get("actor", ""),
        "via": data.get("via", ""),
        "client": data.get("client"),
        "target": data.get("target") or {},
    }


async def entries(
    redis: Redis,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 100,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first: at most ``limit`` entries between ``since_ms`` and ``until_ms`` (inclusive),
    older than the entry id ``before`` if given (the next page: ``before`` is the last id of a page
    that already ended at or before ``until_ms``)."""
    high = f"({before}" if before else (str(until_ms) if until_ms is not None else "+")
    low = str(since_ms) if since_ms is not None else "-"
    found = await redis.xrevrange(AUDIT, max=high, min=low, count=max(1, min(limit, MAX_LIST)))
    return [shown(entry_id, fields) for entry_id, fields in found]
