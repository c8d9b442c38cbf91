"""Exports of the ledger: the usage records themselves, as JSON lines or CSV.

settle.lua writes, in the same atomic step that charges a call, one usage record to the key's
stream (``gw:{team:<team>}:key:<key_id>:ledger``) and adds the call to its team's rollups for
its UTC day. Reports read the rollups (:mod:`gateway.ledger.reports`); an export reads the
records themselves, key by key in pages (XRANGE ... COUNT), merged by time, and streams them out:
a busy month does not fit in memory.

Both select calls by their ``day`` field, the UTC day the call was reserved in: the day its spend
counters and rollups count it under. A call reserved at 23:59:59 and recorded just after midnight
therefore belongs to the first day in both, and a report and an export of the same dates always
agree.

What may be asked (dates, their bounds) is parsed in :mod:`gateway.ledger.query`. Teams and keys
are listed from the registry sets ``gw:teams`` and ``gw:keys`` (SCAN would reach one node of a
Cluster only).
"""

from __future__ import annotations

import csv
import heapq
import io
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterable
from typing import Any

import orjson

from gateway.ledger.csv_cells import csv_safe, iso_time
from gateway.ledger.query import DateRange
from gateway.money.micros import micros_to_usd
from gateway.money.usage_record import DEFAULTS, EXPORT_FIELDS, INT_FIELDS
from gateway.store.directory import spaces_of
from gateway.store.keyspace import KeySpace, TeamSpace
from gateway.store.pipelined import pipelined
from gateway.store.protocol import text
from gateway.store.registry import registered_keys

# Records read per XRANGE: every key's stream holds a page in memory while they are merged, so
# the page shrinks as keys grow, to keep about EXPORT_BUFFER records in memory at once.
EXPORT_BUFFER = 20_000
MAX_PAGE, MIN_PAGE = 1000, 10
# A record is found by its ``day`` field within a window of stream ids around the days asked for:
# its id is the time Redis recorded it, which is later than the start of its call (by up to the
# upstream timeout, or the time a spooled settlement waited for Redis) and, with clock skew
# between a gateway and Redis, may even be a little earlier.
LOOKBACK_MS = 10 * 60 * 1000
LOOKAHEAD_MS = 24 * 3600 * 1000

EXPORT_FORMATS = ("jsonl", "csv")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "json": "application/json"}


class _StreamPages:
    """One key's stream between two ids, read a page at a time."""

    def __init__(self, redis: Any, space: KeySpace, low: str, high: str, page: int) -> None:
        self.redis = redis
        self.stream = space.ledger
        self.next_low = low
        self.high = high
        self.page = page
        self.buffer: deque[tuple[bytes, dict[bytes, bytes]]] = deque()
        self.exhausted = False

    def take(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        self.buffer.extend(entries)
        self.exhausted = len(entries) < self.page
        if entries:
            ms, _, seq = text(entries[-1][0]).partition("-")
            self.next_low = f"{ms}-{int(seq) + 1}"  # just after the last id read: no re-reads

    async def pop(self) -> tuple[bytes, dict[bytes, bytes]] | None:
        if not self.buffer and not self.exhausted:
            self.take(await self.redis.xrange(self.stream, self.next_low, self.high, count=self.page))
        return self.buffer.popleft() if self.buffer else None


class UsageExport:
    """The usage records of a range of days, every key's stream merged in time order.

    :meth:`open` reads the key list and each stream's first page, so that a Redis outage is
    reported before an answer starts streaming; :meth:`records` yields the rest page by page.
    """

    def __init__(self, days: DateRange, pages: list[_StreamPages]) -> None:
        self.range = days
        self.pages = pages
        self._days = frozenset(day.encode() for day in days.days())

    @classmethod
    async def open(cls, redis: Any, days: DateRange, teams: Collection[str] | None = None) -> UsageExport:
        """The records of ``days``: every key's, or those of the keys ``teams`` ever had (one
        team's export, or a team-admin's)."""
        if teams is None:
            key_ids = await registered_keys(redis)
        else:
            key_ids = sorted({text(k) for team in teams for k in await redis.smembers(TeamSpace(team).keys)})
        spaces = await spaces_of(redis, key_ids)
        low, high = str(max(0, days.start_ms - LOOKBACK_MS)), str(days.end_ms + LOOKAHEAD_MS)
        page = max(MIN_PAGE, min(MAX_PAGE, EXPORT_BUFFER // max(1, len(spaces))))
        pages = [_StreamPages(redis, space, low, high, page) for _, space in sorted(spaces.items())]
        first = ((s, ("xrange", s.stream, low, high)) for s in pages)
        async for stream, entries in pipelined(redis, first, count=page):
            stream.take(entries)
        return cls(days, [p for p in pages if p.buffer])

    async def records(self) -> AsyncIterator[dict[str, Any]]:
        heap: list[tuple[int, int, int, dict[bytes, bytes]]] = []
        for index, stream in enumerate(self.pages):
            await _push(heap, index, stream)
        while heap:
            ms, seq, index, fields = heapq.heappop(heap)
            await _push(heap, index, self.pages[index])
            if fields.get(b"day") in self._days:
                yield export_record(f"{ms}-{seq}", fields)

    async def chunks(self, fmt: str, per_chunk: int = 500) -> AsyncIterator[bytes]:
        """The export as bytes, a few hundred records per chunk: JSON lines, or CSV with a header."""
        batch: list[dict[str, Any]] = []
        if fmt == "csv":
            yield _csv_line(EXPORT_FIELDS)
        async for record in self.records():
            batch.append(record)
            if len(batch) >= per_chunk:
                yield _encode(batch, fmt)
                batch = []
        if batch:
            yield _encode(batch, fmt)


async def _push(
    heap: list[tuple[int, int, int, dict[bytes, bytes]]], index: int, stream: _StreamPages
) -> None:
    entry = await stream.pop()
    if entry is not None:
        ms, _, seq = text(entry[0]).partition("-")
        heapq.heappush(heap, (int(ms), int(seq), index, entry[1]))


def export_record(ledger_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A stream entry as the export shows it: typed numbers, the charge in USD, fields in order."""
    found: dict[str, Any] = {"ledger_id": ledger_id}
    extra: dict[str, str] = {}
    for raw_name, raw_value in fields.items():
        spec = _FIELD_SPECS.get(raw_name)
        if spec is None:  # a field added to the record later: kept, after the known ones
            extra[raw_name.decode()] = raw_value.decode()
        elif spec[1]:
            try:
                found[spec[0]] = int(raw_value)
            except ValueError:
                found[spec[0]] = raw_value.decode()
        else:
            found[spec[0]] = raw_value.decode()
    charge = found.get("charge_micros")
    if isinstance(charge, int):
        found["charge_usd"] = micros_to_usd(charge)
        cost = found.setdefault("cost_micros", charge)  # a record from before channels: its charge
        if isinstance(cost, int):
            found["cost_usd"], found["margin_usd"] = micros_to_usd(cost), micros_to_usd(charge - cost)
    ts_ms = found.get("ts_ms")
    if isinstance(ts_ms, int):
        found["time"] = iso_time(ts_ms)
    for name, default in DEFAULTS.items():  # a record written before the field existed
        found.setdefault(name, default)
    record = {name: found[name] for name in EXPORT_FIELDS if name in found}
    record.update(extra)
    return record


# Stream field name (bytes, as Redis returns it) -> (name, is an integer): decoded once, not per record.
_FIELD_SPECS = {name.encode(): (name, name in INT_FIELDS) for name in EXPORT_FIELDS}


def _encode(records: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return b"".join(orjson.dumps(r) + b"\n" for r in records)
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(
        [csv_safe(r.get(name, "")) for name in EXPORT_FIELDS] for r in records
    )
    return out.getvalue().encode()


def _csv_line(cells: Iterable[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue().encode()
