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


KEY_SHAPE = "sk-gw-<12 letters and digits>_<secret>"


def invalid_key(presented: str | None = None) -> GatewayError:
    """A token that is not a gateway key, or no key this gateway issued: say what one looks like
    and who issues them (a caller who pasted their OpenAI key learns why it fails here)."""
    if presented is not None and presented.startswith("sk-") and not presented.startswith("sk-gw-"):
        what = "This is not a key of this gateway (an OpenAI or other provider's key does not work here)."
    else:
        what = "Invalid API key: no active key of this gateway matches it."
    return errors.unauthorized(
        f"{what} A gateway key looks like {KEY_SHAPE}; your gateway's admin issues them "
        "(gateway keys create, or POST /admin/v1/keys)."
    )


def revoked(at_ms: int) -> GatewayError:
    return errors.unauthorized(
        f"This API key was revoked at {iso_ms(at_ms)}.", code="key_revoked", reason="revoked_key"
    )


def expired(at_ms: int) -> GatewayError:
    return errors.unauthorized(
        f"This API key expired at {iso_ms(at_ms)}.", code="key_expired", reason="expired_key"
    )


def budget_message(refusal: BudgetExhausted, now_s: float | None = None, key_id: str | None = None) -> str:
    """What a budget that cannot cover a call says: why (used up, or held by calls in flight, or
    this call is larger than what is left), when it resets, and who can raise it."""
    usd = micros_to_usd
    left = max(0, refusal.budget_micros - refusal.spent_micros - refusal.reserved_micros)
    period = PERIOD_ADJECTIVES.get(refusal.period, refusal.period)
    budget = f"{_whose(refusal)} {period} budget of ${usd(refusal.budget_micros)}"
    price = refusal.unit_price_micros
    if refusal.exhausted and price:
        text = (
            f"{budget} is used up: ${usd(refusal.spent_micros)} spent leaves "
            f"${usd(max(0, refusal.budget_micros - refusal.spent_micros))}, less than one image "
            f"at ${usd(price)}."
        )
    else:
        images = refusal.amount_micros // price if price else 0
        size = f" ({counted(images, 'image')} at ${usd(price)})" if images else ""
        text = (
            f"{budget} cannot cover this call: ${usd(refusal.spent_micros)} spent and "
            f"${usd(refusal.reserved_micros)} reserved by calls in flight leave ${usd(left)}, and this "
            f"call may cost up to ${usd(refusal.amount_micros)}{size}."
        )
    resets = period_resets_at(refusal.period, now_s)
    when = " A total budget does not reset." if resets is None else f" It resets at {iso_z(resets)}."
    return text + when + " " + _who_raises(refusal, key_id)


def _who_raises(refusal: BudgetExhausted, key_id: str | None) -> str:
    if refusal.scope == "team":
        how = f"gateway teams set {refusal.team} --budget-usd ..."
    else:
        how = f"gateway keys update {key_id or '<key_id>'} --budget-usd ..."
    return f"A gateway admin can raise it ({how})."


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


def refusal_error(refusal: Refusal, model: str, key_id: str | None = None) -> GatewayError:
    """The error a caller gets for a refused reserve (``key_id``: the caller's, to name in hints)."""
    match refusal:
        case Revoked(at_ms=at_ms):
            return revoked(at_ms)
        case Expired(at_ms=at_ms):
            return expired(at_ms)
        case ModelNotAllowed():
            return errors.model_not_allowed(model)
        case BudgetExhausted(scope=scope):
            code = "team_budget_exceeded" if scope == "team" else "budget_exceeded"
            return errors.insufficient_quota(budget_message(refusal, key_id=key_id), code)
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
