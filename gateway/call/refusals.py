"""What a refused caller is told: each refusal of the reserve script as an OpenAI error.

Pure functions of the refusal's numbers, so the wording is unit-tested without a Redis.
"""

from __future__ import annotations

from gateway.core import errors
from gateway.core.errors import GatewayError, counted
from gateway.money.budget import (
    BudgetExhausted,
    DailyImagesExhausted,
    Expired,
    InvalidKey,
    ModelNotAllowed,
    RateLimited,
    Refusal,
    Revoked,
    TooManyInFlight,
)
from gateway.money.micros import micros_to_usd
from gateway.money.periods import day_resets_at, iso_ms, iso_z, period_resets_at

PERIOD_ADJECTIVES = {"day": "daily", "month": "monthly", "total": "total"}


def invalid_key() -> GatewayError:
    return errors.unauthorized("Invalid API key.")


def revoked(at_ms: int) -> GatewayError:
    return errors.unauthorized(
        f"This API key was revoked at {iso_ms(at_ms)}.", code="key_revoked", reason="revoked_key"
    )


def expired(at_ms: int) -> GatewayError:
    return errors.unauthorized(
        f"This API key expired at {iso_ms(at_ms)}.", code="key_expired", reason="expired_key"
    )


def budget_message(refusal: BudgetExhausted, now_s: float | None = None) -> str:
    usd = micros_to_usd
    text = (
        f"{_whose(refusal)} {PERIOD_ADJECTIVES.get(refusal.period, refusal.period)} budget of "
        f"${usd(refusal.budget_micros)} is exhausted: ${usd(refusal.spent_micros)} spent and "
        f"${usd(refusal.reserved_micros)} reserved by calls in flight, and this call may cost up "
        f"to ${usd(refusal.amount_micros)}."
    )
    resets = period_resets_at(refusal.period, now_s)
    if resets is None:
        return text + " A total budget does not reset; ask an admin to raise it."
    return text + f" It resets at {iso_z(resets)}."


def daily_images_message(refusal: DailyImagesExhausted, now_s: float | None = None) -> str:
    return (
        f"{_whose(refusal)} cap of {counted(refusal.cap, 'image')} per day is reached: "
        f"{refusal.used} delivered and "
        f"{refusal.reserved_images} reserved by calls in flight today, and this call may return up "
        f"to {refusal.wanted}. It resets at {iso_z(day_resets_at(now_s))}."
    )


def _whose(refusal: BudgetExhausted | DailyImagesExhausted) -> str:
    """Whose limit it is: a caller must know whether asking for a bigger key budget would help."""
    if refusal.scope == "team":
        return f"Your team's ({refusal.team}, shared by all its keys)"
    return "This key's"


def rate_limited(refusal: RateLimited) -> GatewayError:
    return errors.rate_limited(
        f"This key's limit of {counted(refusal.rpm, 'request')} per minute is reached; retry in "
        f"{refusal.retry_ms / 1000:.1f} s.",
        -(-refusal.retry_ms // 1000),
    )


def refusal_error(refusal: Refusal, model: str) -> GatewayError:
    """The error a caller gets for a refused reserve."""
    match refusal:
        case Revoked(at_ms=at_ms):
            return revoked(at_ms)
        case Expired(at_ms=at_ms):
            return expired(at_ms)
        case ModelNotAllowed():
            return errors.model_not_allowed(model)
        case BudgetExhausted(scope=scope):
            code = "team_budget_exceeded" if scope == "team" else "budget_exceeded"
            return errors.insufficient_quota(budget_message(refusal), code)
        case DailyImagesExhausted(scope=scope):
            code = "team_images_per_day_exceeded" if scope == "team" else "images_per_day_exceeded"
            return errors.insufficient_quota(daily_images_message(refusal), code)
        case RateLimited():
            return rate_limited(refusal)
        case TooManyInFlight(max_concurrent=limit):
            return errors.rate_limited(
                f"This key already has {counted(limit, 'request')} in flight, its limit; "
                "retry when one finishes.",
                1,
                reason="concurrency_exceeded",
            )
        case InvalidKey():
            return invalid_key()
    raise TypeError(f"unknown refusal {refusal!r}")
