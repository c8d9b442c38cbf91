"""Budget alert thresholds: fractions of a budget in (0, 1], kept as integer millionths.

The settle script compares spend with ``ppm x budget / 10^6`` in integers (common.lua
``reached``), so a threshold of 0.8 fires at exactly 80% of the budget, never a float's
rounding away from it. Stored in a key record or team settings as ``"500000,800000,1000000"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

PPM = 1_000_000
MAX_THRESHOLDS = 10


def to_ppm(value: object) -> int:
    """One threshold (a number or a numeric string) as millionths; ValueError if not in (0, 1]."""
    if isinstance(value, bool):
        raise ValueError(f"an alert threshold is a fraction in (0, 1], not {value!r}")
    try:
        fraction = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"an alert threshold is a fraction in (0, 1], not {value!r}") from None
    if not fraction.is_finite() or not 0 < fraction <= 1:
        raise ValueError(f"an alert threshold is a fraction in (0, 1], not {value!r}")
    ppm = fraction * PPM
    if ppm != ppm.to_integral_value():
        raise ValueError(f"an alert threshold has at most six decimals: {value!r}")
    return int(ppm)


def parse_list(values: Iterable[object]) -> list[int]:
    """Thresholds as sorted, distinct millionths; at most :data:`MAX_THRESHOLDS`."""
    found = sorted({to_ppm(v) for v in values})
    if len(found) > MAX_THRESHOLDS:
        raise ValueError(f"at most {MAX_THRESHOLDS} alert thresholds")
    return found


def stored(ppms: list[int] | None) -> str:
    return ",".join(str(p) for p in ppms or [])


def from_stored(text: str | bytes | None) -> list[int]:
    if isinstance(text, bytes):
        text = text.decode()
    return [int(part) for part in (text or "").split(",") if part.strip().isdigit()]


def shown(text: str | bytes | None) -> list[float] | None:
    """As the API shows them: ``[0.5, 0.8, 1.0]``, or None when there are none."""
    return [as_fraction(p) for p in from_stored(text)] or None


def as_fraction(ppm: int) -> float:
    """For JSON: 800000 -> 0.8 (exact enough to read; the comparison itself is in integers)."""
    return float(Decimal(ppm) / PPM)
