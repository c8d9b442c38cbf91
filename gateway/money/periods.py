"""UTC calendar periods: which day and month a moment falls in, and when a budget resets.

Budgets and images-per-day caps count per UTC day or month; the counters' Redis names carry the
period id (``2026-11-25``, ``2026-11``), so a new period starts from zero without a reset job.
"""

from __future__ import annotations

import calendar
import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime

DAY_S = 86400


@dataclass(frozen=True)
class Periods:
    """The UTC calendar periods a moment falls in, as used in counter names."""

    day: str  # 2026-11-25
    month: str  # 2026-11

    @classmethod
    def at(cls, epoch_s: float) -> Periods:
        return _of_day(int(epoch_s // DAY_S))  # POSIX time has no leap seconds: days are exact

    @classmethod
    def now(cls) -> Periods:
        return cls.at(time.time())

    def period_id(self, period: str) -> str:
        """A budget period's id in counter and mark names: ``d2026-11-25``, ``m2026-11``, ``total``."""
        if period == "day":
            return f"d{self.day}"
        if period == "month":
            return f"m{self.month}"
        return "total"


@functools.lru_cache(maxsize=64)
def _of_day(day_number: int) -> Periods:
    """Made once per day: every call asks, and formatting the same day again per call shows in
    the profile."""
    t = time.gmtime(day_number * DAY_S)
    return Periods(f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", f"{t.tm_year:04d}-{t.tm_mon:02d}")


def period_resets_at(period: str, epoch_s: float | None = None) -> datetime | None:
    """When a budget period ends (UTC); None for ``total``, which never resets."""
    t = time.gmtime(time.time() if epoch_s is None else epoch_s)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return datetime.fromtimestamp(start + DAY_S, tz=UTC)
    if period == "month":
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return datetime(year, month, 1, tzinfo=UTC)
    return None


def day_resets_at(epoch_s: float | None = None) -> datetime:
    """The next UTC midnight: when images-per-day caps start again."""
    t = time.gmtime(time.time() if epoch_s is None else epoch_s)
    start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    return datetime.fromtimestamp(start + DAY_S, tz=UTC)


def iso_z(moment: datetime) -> str:
    """ISO 8601 with a ``Z``, as every time the gateway shows is UTC."""
    return moment.isoformat().replace("+00:00", "Z")


def iso_ms(epoch_ms: int) -> str:
    """An epoch-milliseconds time as ``2026-11-25T10:00:00Z`` (second precision)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_ms / 1000))
