"""The limit options of ``keys create`` and ``keys update``, and how they become KeyLimits fields.

``update`` changes only the options given, so its help never claims a default: an option left
out keeps the key's current value (``--budget-period`` included).
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import Any

from gateway.cli.common import CommandError, add_json_option

NONE_WORDS = ("none", "unlimited")


def add_limit_options(parser: argparse.ArgumentParser, updating: bool) -> None:
    keeps = "; left out: unchanged" if updating else ""
    parser.add_argument("--models", help=f"comma-separated models the key may use (default: all){keeps}")
    parser.add_argument("--expires", help=f"expiry, ISO 8601 date or time (UTC), in the future{keeps}")
    parser.add_argument("--budget-usd", help=f"spend budget in USD per budget period{keeps}")
    period_help = (
        "budget period; left out: the key keeps its current period"
        if updating
        else "budget period: a calendar day or month (UTC), or the key's whole life (default month)"
    )
    parser.add_argument("--budget-period", choices=["day", "month", "total"], help=period_help)
    parser.add_argument("--images-per-day", type=_count, help=f"cap on images per UTC day{keeps}")
    parser.add_argument("--rpm", type=_count, help=f"requests per minute{keeps}")
    parser.add_argument("--max-concurrent", type=_count, help=f"requests in flight at once{keeps}")
    add_alert_option(parser, keeps)
    add_json_option(parser)
    parser.epilog = "Give 'none' to a limit to remove it, e.g. --budget-usd none." if updating else None


def add_alert_option(parser: argparse.ArgumentParser, keeps: str = "") -> None:
    parser.add_argument(
        "--alert-thresholds",
        help=f"comma-separated fractions of the budget that send a webhook alert, e.g. 0.5,0.8,1{keeps}",
    )


def alerts_from_args(args: argparse.Namespace) -> list[str] | None:
    """``0.5,0.8,1`` as a list of strings (checked by the model); 'none' clears them."""
    text = args.alert_thresholds
    if text.lower() in NONE_WORDS:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def count_option(text: str) -> int | str:
    """A whole number, or 'none' (no limit): the type of every count option."""
    return _count(text)


def _count(text: str) -> int | str:
    if text.lower() in NONE_WORDS:
        return "none"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or 'none': {text!r}") from None


def limits_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The KeyLimits fields of the options given; 'none' becomes None (no limit)."""
    given: dict[str, Any] = {}
    if args.models is not None:
        given["models"] = [m.strip() for m in args.models.split(",") if m.strip()] or None
    if args.expires is not None:
        given["expires_at"] = None if args.expires.lower() in NONE_WORDS else future_time(args.expires)
    if args.budget_usd is not None:
        given["budget_usd"] = None if args.budget_usd.lower() in NONE_WORDS else args.budget_usd
    for name in ("budget_period", "images_per_day", "rpm", "max_concurrent"):
        value = getattr(args, name)
        if value is not None:
            given[name] = None if value == "none" else value
    if args.alert_thresholds is not None:
        given["alert_thresholds"] = alerts_from_args(args)
    return given


def parse_when(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or time; a time without a zone is UTC."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"not an ISO 8601 date or time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def future_time(text: str) -> datetime:
    """An expiry, refused if it has passed: a key that is dead on arrival is never what was meant."""
    when = parse_when(text)
    if when <= datetime.now(UTC):
        shown = when.isoformat().replace("+00:00", "Z")
        raise CommandError(
            f"--expires {text} ({shown}) is in the past: give a future date or time "
            "(to stop a key now, use `gateway keys revoke`)"
        )
    return when
