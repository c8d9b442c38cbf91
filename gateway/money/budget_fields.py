"""The budget fields a key and a team both carry, and their checks, defined once.

``KeyLimits`` (admin/keys.py) and ``TeamSettings`` (admin/teams.py) extend it: the same budget in USD
(exact to the micro-dollar), period, daily image cap and alert thresholds, validated alike.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.money import thresholds
from gateway.money.micros import USD_FORMAT, usd_to_micros

MAX_LIMIT = 1_000_000_000  # keeps every number exact in the Lua scripts and printable as JSON

BudgetPeriod = Literal["day", "month", "total"]


class BudgetFields(BaseModel):
    # A field the API does not know is refused, never dropped: a misspelled "budget" once made
    # a key with no budget at all.
    model_config = ConfigDict(extra="forbid")

    budget_usd: Decimal | None = Field(
        default=None, ge=0, description="Spend budget in USD (number or string)."
    )
    budget_period: BudgetPeriod | None = Field(default=None, description="day, month (default) or total.")
    images_per_day: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT, description="Cap on images per UTC day."
    )
    alert_thresholds: list[Decimal] | None = Field(
        default=None, description="Fractions of the budget in (0, 1] that send a webhook alert."
    )

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _plain_decimal(cls, value: object) -> object:
        """"$1,000" is refused saying what is wanted, not just "not a valid decimal"."""
        if isinstance(value, str):
            try:
                Decimal(value)
            except InvalidOperation:
                raise ValueError(f"{value!r} is not {USD_FORMAT}") from None
        return value

    @field_validator("budget_usd")
    @classmethod
    def _exact_usd(cls, value: Decimal | None) -> Decimal | None:
        if value is not None:
            usd_to_micros(value)
        return value

    @field_validator("alert_thresholds")
    @classmethod
    def _fractions(cls, value: list[Decimal] | None) -> list[Decimal] | None:
        if value is not None:
            thresholds.parse_list(value)
        return value
