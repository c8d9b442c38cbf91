"""One key's budget, spend and reservations now: what ``GET /admin/v1/keys/{id}/usage`` and
``gateway keys usage`` show.

It lives outside ``gateway.routes`` so that the CLI, which must not depend on the HTTP layer,
and the admin route share one definition of the numbers.
"""

from __future__ import annotations

from typing import Any

from gateway.money import budget
from gateway.money.micros import micros_to_usd
from gateway.money.periods import Periods, iso_z, period_resets_at
from gateway.store.keyspace import KeySpace
from gateway.store.protocol import Redis


async def usage_report(redis: Redis, space: KeySpace) -> dict[str, Any]:
    """The key's period, budget, spent, reserved and remaining USD, images today and in-flight calls."""
    used = await budget.usage(redis, space, Periods.now())
    return {"key_id": space.key_id, **usage_json(used)}


def usage_json(used: budget.KeyUsage) -> dict[str, Any]:
    """A key's or a team's usage, as the API shows both."""
    has_budget = used.budget_micros >= 0
    usd = micros_to_usd
    resets = period_resets_at(used.period) if has_budget else None
    return {
        "period": used.period if has_budget else None,
        "budget_usd": usd(used.budget_micros) if has_budget else None,
        "spent_usd": usd(used.spent_micros),
        "exhausted": has_budget and used.exhausted == 1,
        "reserved_usd": usd(used.reserved_micros),
        "remaining_usd": usd(max(0, used.budget_micros - used.spent_micros - used.reserved_micros))
        if has_budget
        else None,
        "images_today": used.images_today,
        "inflight": used.inflight,
        "resets_at": iso_z(resets) if resets else None,
    }
