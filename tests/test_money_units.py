"""Fast, in-process tests of the pure functions money depends on: no Redis, no processes."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.call.refusals import budget_message, daily_images_message, refusal_error
from gateway.core.errors import overloaded
from gateway.money.budget import BudgetExhausted, DailyImagesExhausted, RateLimited, Revoked, TooManyInFlight
from gateway.money.micros import charge_micros, micros_to_usd, usd_to_micros
from gateway.money.periods import Periods, day_resets_at, period_resets_at
from gateway.money.rollups import Amounts, parse_rollup
from gateway.money.usage_record import DERIVED_FIELDS, EXPORT_FIELDS, INT_FIELDS, SCRIPT_FIELDS, UsageRecord


def epoch(text: str) -> float:
    return calendar.timegm(datetime.fromisoformat(text).timetuple())


# -- money ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "micros"),
    [
        ("0", 0),
        ("0.135", 135_000),
        ("1.5", 1_500_000),
        (2, 2_000_000),
        ("0.000001", 1),
        (Decimal("10"), 10**7),
    ],
)
def test_usd_amounts_parse_exactly(usd: object, micros: int) -> None:
    assert usd_to_micros(usd) == micros  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["0.0000001", "-1", "NaN", "Infinity", "abc", "1000000001"])
def test_usd_amounts_that_cannot_be_money_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        usd_to_micros(bad)


def test_micro_dollars_print_with_six_places() -> None:
    assert micros_to_usd(486_000) == "0.486000"
    assert micros_to_usd(0) == "0.000000"
    assert micros_to_usd(-1) == "-0.000001"
    assert micros_to_usd(123_456_789) == "123.456789"


def test_a_charge_is_the_images_delivered_at_the_reserved_price() -> None:
    assert charge_micros(3, 135_000) == 405_000
    assert charge_micros(0, 135_000) == 0
    assert charge_micros(5, 0) == 0  # a free model costs nothing, never "-0"


# -- periods --------------------------------------------------------------------------------------


def test_periods_name_the_utc_day_and_month() -> None:
    assert Periods.at(epoch("2026-11-30T23:59:59")) == Periods("2026-11-30", "2026-11")
    assert Periods.at(epoch("2026-12-01T00:00:00")) == Periods("2026-12-01", "2026-12")


@given(st.floats(min_value=0, max_value=4102444800, allow_nan=False))  # 1970 to 2100
def test_periods_are_those_of_the_utc_calendar_at_any_instant(epoch_s: float) -> None:
    """Periods are remembered per day: the day number must never disagree with the calendar."""
    t = time.gmtime(epoch_s)
    assert Periods.at(epoch_s) == Periods(time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t))


def test_a_monthly_budget_resets_at_the_first_of_the_next_month() -> None:
    assert period_resets_at("month", epoch("2026-12-31T12:00:00")) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_resets_at("month", epoch("2028-02-29T23:59:59")) == datetime(2028, 3, 1, tzinfo=UTC)


def test_a_daily_budget_resets_at_the_next_utc_midnight() -> None:
    assert period_resets_at("day", epoch("2026-11-30T23:59:59")) == datetime(2026, 12, 1, tzinfo=UTC)
    assert day_resets_at(epoch("2026-11-30T00:00:00")) == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_total_budget_never_resets() -> None:
    assert period_resets_at("total", epoch("2026-11-30T00:00:00")) is None


# -- what refused callers read ----------------------------------------------------------------------


def test_a_budget_that_cannot_cover_a_call_gives_the_numbers_the_reset_and_who_raises_it() -> None:
    refusal = BudgetExhausted("t", "k", "key", 1_000_000, 600_000, 270_000, 270_000, "month", 135_000)
    text = budget_message(refusal, epoch("2026-11-30T10:00:00"), key_id="abcdefghijkl")
    assert text == (
        "This key's monthly budget of $1.000000 cannot cover this call: $0.600000 spent and "
        "$0.270000 reserved by calls in flight leave $0.130000, and this call may cost up to "
        "$0.270000 (2 images at $0.135000). It resets at 2026-12-01T00:00:00Z. A gateway admin can "
        "raise it (gateway keys update abcdefghijkl --budget-usd ...)."
    )


def test_a_budget_with_less_than_one_image_left_reads_as_used_up() -> None:
    """$0.03 left of $0.30 at $0.162 an image: not "exhausted" with money left, but used up."""
    refusal = BudgetExhausted("design", None, "team", 300_000, 270_000, 0, 162_000, "day", 162_000, 1)
    text = budget_message(refusal, epoch("2026-11-30T10:00:00"))
    assert text == (
        "Your team's (design, shared by all its keys) daily budget of $0.300000 is used up: "
        "$0.270000 spent leaves $0.030000, less than one image at $0.162000. It resets at "
        "2026-12-01T00:00:00Z. A gateway admin can raise it (gateway teams set design --budget-usd ...)."
    )


def test_a_total_budget_refusal_says_it_does_not_reset() -> None:
    refusal = BudgetExhausted("t", "k", "key", 0, 0, 0, 135_000, "total", 135_000, 1)
    assert "A total budget does not reset. A gateway admin can raise it" in budget_message(refusal)


def test_an_images_per_day_refusal_counts_delivered_and_reserved() -> None:
    refusal = DailyImagesExhausted("t", "k", "key", 10, 7, 2, 3)
    text = daily_images_message(refusal, epoch("2026-11-30T10:00:00"))
    assert "cap of 10 images per day" in text and "7 delivered and 2 reserved" in text
    assert text.endswith("It resets at 2026-12-01T00:00:00Z.")


def test_each_refusal_has_its_status_code_and_retry_hint() -> None:
    budget = refusal_error(BudgetExhausted("t", "k", "key", 0, 0, 0, 1, "day"), "m")
    assert (budget.status, budget.type, budget.code, budget.retry) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
        False,
    )
    rate = refusal_error(RateLimited("t", "k", 60, 1500), "m")
    assert (rate.status, rate.retry_after_s) == (429, 2)
    busy = refusal_error(TooManyInFlight("t", "k", 3), "m")
    assert busy.reason == "concurrency_exceeded" and "3 requests in flight" in busy.message
    revoked = refusal_error(Revoked("t", "k", 1_764_496_800_000), "m")
    assert (revoked.status, revoked.code) == (401, "key_revoked")
    assert "2025-11-30T10:00:00Z" in revoked.message


def test_a_limit_of_one_is_said_in_the_singular() -> None:
    """A key with rpm 1 once read "limit of 1 requests per minute"."""
    rate = refusal_error(RateLimited("t", "k", 1, 1500), "m")
    assert "limit of 1 request per minute is reached" in rate.message
    busy = refusal_error(TooManyInFlight("t", "k", 1), "m")
    assert "already has 1 request in flight, its limit" in busy.message
    images = daily_images_message(DailyImagesExhausted("t", "k", "key", 1, 1, 0, 1))
    assert "cap of 1 image per day is reached" in images
    assert "limit of 1 request in flight" in overloaded(1).message
    assert "limit of 2 requests per minute" in refusal_error(RateLimited("t", "k", 2, 1), "m").message


# -- the ledger's shapes ------------------------------------------------------------------------------


def test_a_rollup_hash_reads_as_amounts_per_model_and_channel() -> None:
    raw = {
        b"seedream|calls": b"3",
        b"seedream|images": b"5",
        b"seedream|spend": b"675000",
        b"odd|name|calls": b"1",  # a model name may hold a "|"
        b"idle|calls": b"0",
        b"seedream\x1eark|calls": b"2",  # another channel's calls of the same model
        b"seedream\x1eark|spend": b"270000",
        b"seedream\x1eark|margin": b"-30000",  # it cost more than the price
    }
    assert parse_rollup(raw) == {
        ("seedream", "default"): Amounts(calls=3, images=5, spend_micros=675_000),
        ("odd|name", "default"): Amounts(calls=1, images=0, spend_micros=0),
        ("seedream", "ark"): Amounts(calls=2, spend_micros=270_000, margin_micros=-30_000),
    }
    ark = parse_rollup(raw)[("seedream", "ark")]
    assert (ark.cost_micros, ark.as_json()["cost_usd"], ark.as_json()["margin_usd"]) == (
        300_000,
        "0.300000",
        "-0.030000",
    )
    assert parse_rollup(raw)[("seedream", "default")].cost_micros == 675_000, "no margin: cost is spend"


def test_the_usage_record_is_written_and_exported_in_one_field_order() -> None:
    record = UsageRecord(
        request_id="req_1",
        ts_ms=1,
        day="2026-11-30",
        team="t",
        key_id="k",
        key_name="n",
        model="m",
        n=2,
        images=2,
        upstream_images=2,
        unit_price_micros=135_000,
        charge_micros=270_000,
        upstream_status=200,
        upstream_latency_ms=5,
        outcome="ok",
        client_left=0,
        reconcile=0,
    )
    fields = record.stream_fields()
    names = fields[::2]
    assert names == [f for f in EXPORT_FIELDS if f not in (*DERIVED_FIELDS, *SCRIPT_FIELDS)]
    assert fields[names.index("charge_micros") * 2 + 1] == "270000"
    assert {"images", "charge_micros", "reserved"} <= INT_FIELDS and "team" not in INT_FIELDS


def test_columns_added_later_come_last_and_older_records_read_with_their_defaults() -> None:
    from gateway.call.settle import SettleOrder
    from gateway.ledger.exports import export_record

    later = (
        "user",
        "over_delivered",
        "channel",
        "cost_micros",
        "cost_usd",
        "margin_usd",
        "attempt",
        "failed_over",
    )
    assert EXPORT_FIELDS[-len(later) :] == later, "a column added later comes last: positional CSV readers"
    assert "user" not in INT_FIELDS and "over_delivered" in INT_FIELDS
    record = UsageRecord(
        request_id="req_u", ts_ms=1, day="2026-11-30", team="t", key_id="k", key_name="n", model="m",
        n=1, images=1, upstream_images=1, unit_price_micros=1, charge_micros=1, upstream_status=200,
        upstream_latency_ms=1, outcome="ok", client_left=0, reconcile=0, user="alice",
    )  # fmt: skip
    fields = record.stream_fields()
    assert fields[fields.index("user") + 1] == "alice"
    assert fields[fields.index("over_delivered") + 1] == "0"
    stored = {name.encode(): value.encode() for name, value in zip(fields[::2], fields[1::2], strict=True)}
    assert export_record("1-0", stored)["user"] == "alice"
    added = (b"user", b"stream", b"over_delivered", b"channel", b"cost_micros", b"attempt", b"failed_over")
    older = {name: value for name, value in stored.items() if name not in added}
    exported = export_record("1-0", older)
    assert (exported["user"], exported["stream"]) == ("", 0), "written before the fields existed"
    assert exported["over_delivered"] == 0
    assert (exported["channel"], exported["attempt"], exported["failed_over"]) == ("default", 1, 0)
    assert (exported["cost_micros"], exported["margin_usd"]) == (1, "0.000000"), "its cost was its price"
    assert list(exported) == [f for f in EXPORT_FIELDS if f not in SCRIPT_FIELDS]
    # A settlement spooled by a release before: its record has no user, over-delivery, channel
    # nor cost, and replays with "", 0, the default channel, and its charge as its cost.
    entry = {
        "key_id": "k", "request_id": "req_u", "model": "m", "images": 1, "charge_micros": 1,
        "day": "2026-11-30", "month": "2026-11",
        "record": {k: v for k, v in record.__dict__.items() if k.encode() not in added},
    }  # fmt: skip
    replayed = SettleOrder.from_json(entry)
    assert (replayed.record.user, replayed.record.channel, replayed.record.cost_micros) == ("", "default", 1)
    assert replayed.record.over_delivered == 0
    assert replayed.attempts == ()
    assert SettleOrder.from_json({**entry, "record": record.__dict__}).record.user == "alice"
