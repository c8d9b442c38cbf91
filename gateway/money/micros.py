"""Money as integer micro-USD: parsing, printing, and what a call is charged.

Every amount inside the gateway is an ``int`` of micro-dollars; USD strings exist only at the
edges (settings, the admin API, headers, reports). A float never holds money.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
# The Lua scripts count micro-USD in doubles, exact up to 2**53 (about 9e9 USD): stay well below.
MAX_USD = 1_000_000_000


USD_FORMAT = "a plain decimal number of US dollars such as 1000 or 0.135 (no '$', no thousands separators)"


def usd_to_micros(value: str | int | float | Decimal) -> int:
    """Parse a USD amount exactly; more than six decimals or a negative amount is an error."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a USD amount: {value!r}; write {USD_FORMAT}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a non-negative USD amount: {value!r}")
    if amount > MAX_USD:
        raise ValueError(f"USD amounts above {MAX_USD} are not accepted: {value!r}")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"USD amounts have at most six decimals: {value!r}")
    return int(micros)


def micros_to_usd(micros: int) -> str:
    """Format micro-dollars as a decimal string with six places, e.g. ``1.620000``."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{frac:06d}"


def chargeable(delivered: int, reserved: int) -> tuple[int, int]:
    """The images a call is charged for, and those delivered beyond its reservation.

    A call is charged at most what it reserved (``n``, or the sequential ``max_images``): the
    budget is a ceiling whatever the upstream does. The images beyond are delivered all the same
    and recorded as over-delivered, for finance to settle with the upstream.
    """
    charged = min(max(0, delivered), max(0, reserved))
    return charged, max(0, delivered) - charged


def charge_micros(images: int, unit_price_micros: int) -> int:
    """What a call costs: the images delivered at the price it was reserved at.

    The one place a charge is computed. The settle script applies this number as given, so the
    headers, the metrics and the ledger can never disagree with the money moved.
    """
    return max(0, images) * unit_price_micros
