"""Cells of the finance files: times a spreadsheet reads, and names it will not run as formulas."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any


def iso_time(ts_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC (``2026-11-30T05:35:42.123Z``): what a spreadsheet reads."""
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NEGATIVE_AMOUNT = re.compile(r"-[0-9]+(\.[0-9]+)?")


def csv_safe(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, prefixed with ``'`` (OWASP's CSV-injection
    advice). Key and team names are chosen by people, so a name like ``=HYPERLINK(...)`` must reach
    finance's spreadsheet as text. Numbers are written as numbers: a negative amount (a margin
    where a channel costs more than the price, ``-0.005000``) is a number, not a formula."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS) and not _NEGATIVE_AMOUNT.fullmatch(cell):
        return "'" + cell
    return cell
