"""What a report or export may ask for: a range of UTC days, parsed and bounded.

Split from :mod:`gateway.ledger`, which re-exports these names. A day outside what the ledger can
hold is a 400, not a 500 or a Redis error: stream ids are milliseconds since 1970-01-01 UTC, and a
range ends at the midnight after its last day, which Python's dates have up to 9999-12-31.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

MAX_RANGE_DAYS = 400
__all__ = [
    "FIRST_DAY",
    "LAST_DAY",
    "MAX_RANGE_DAYS",
    "DateRange",
    "LedgerQueryError",
    "parse_month",
    "parse_range",
]


# The days the ledger holds: stream ids are ms since 1970-01-01; a day ends at the next midnight.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 30)


class LedgerQueryError(ValueError):
    """A report or export asked for something malformed; ``param`` names the bad input."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# -- what is asked ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DateRange:
    """UTC days from ``start`` to ``end``, both included."""

    start: date
    end: date

    def days(self) -> list[str]:
        count = (self.end - self.start).days + 1
        return [(self.start + timedelta(days=i)).isoformat() for i in range(count)]

    @property
    def start_ms(self) -> int:
        return _midnight_ms(self.start)

    @property
    def end_ms(self) -> int:
        """The last millisecond of ``end``."""
        return _midnight_ms(self.end + timedelta(days=1)) - 1

    def as_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _midnight_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def parse_range(start: str | None, end: str | None, max_days: int = MAX_RANGE_DAYS) -> DateRange:
    """Two ``YYYY-MM-DD`` UTC dates, both included; at most ``max_days`` days."""
    first, last = _parse_day(start, "start"), _parse_day(end, "end")
    if first > last:
        raise LedgerQueryError(f"'start' ({first}) is after 'end' ({last}).", "start")
    if (last - first).days + 1 > max_days:
        raise LedgerQueryError(
            f"The range {first} to {last} is longer than {max_days} days; ask for it in parts.", "end"
        )
    return DateRange(first, last)


def _parse_day(text: str | None, param: str) -> date:
    if not text:
        raise LedgerQueryError(f"'{param}' is required: a UTC date like 2026-11-01.", param)
    try:
        if len(text) != 10:
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise LedgerQueryError(f"'{param}' must be a date like 2026-11-01, not {text!r}.", param) from None
    if FIRST_DAY <= day <= LAST_DAY:
        return day
    raise LedgerQueryError(f"'{param}' must be between {FIRST_DAY} and {LAST_DAY}, not {day}.", param)


def parse_month(text: str | None, param: str = "month") -> DateRange:
    """``YYYY-MM`` (UTC) as the range of its days: the whole calendar month."""
    try:
        if text is None or len(text) != 7 or text[4] != "-":
            raise ValueError
        year, number = int(text[:4]), int(text[5:])
        first = date(year, number, 1)
    except ValueError:
        raise LedgerQueryError(f"'{param}' must be a month like 2026-11, not {text!r}.", param) from None
    if not FIRST_DAY <= first <= LAST_DAY:
        raise LedgerQueryError(f"'{param}' must be between {FIRST_DAY:%Y-%m} and {LAST_DAY:%Y-%m}.", param)
    return DateRange(first, date(year, number, calendar.monthrange(year, number)[1]))
