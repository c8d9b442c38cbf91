"""What a budget alert looks like on the wire: JSON body, one human sentence, HMAC signature.

Pure functions of the facts settle.lua stored in the outbox (``outbox_bodies``), so a retry of
the same alert sends the very same bytes, and its signature with them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from gateway.money.micros import micros_to_usd
from gateway.money.thresholds import PPM, as_fraction

TYPE = "budget.threshold"
SIGNATURE_HEADER = "x-gateway-signature"
PERIOD_WORDS = {"day": "daily", "month": "monthly", "total": "total"}


@dataclass(frozen=True)
class AlertFacts:
    """One queued alert, as settle.lua encoded it (see gateway/lua/settle.lua, queue_alerts)."""

    scope: str  # "team" or "key"
    team: str
    key_id: str  # "" for team scope
    key_name: str
    threshold_ppm: int
    spent_micros: int
    budget_micros: int
    period: str  # day, month, total
    period_start: str  # "2026-11-30", "2026-11-01", "" (total)
    at_ms: int
    # The call a budget refused with less than one image left (reserve.lua): the budget is used
    # up although spend is below it. None: spend itself reached the threshold (settle.lua).
    refused_micros: int | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> AlertFacts:
        """ValueError (or KeyError/TypeError) if the stored JSON is not an alert."""
        fields: dict[str, Any] = orjson.loads(raw)
        return cls(
            scope=str(fields["scope"]),
            team=str(fields["team"]),
            key_id=str(fields.get("key_id") or ""),
            key_name=str(fields.get("key_name") or ""),
            threshold_ppm=int(fields["threshold_ppm"]),
            spent_micros=int(fields["spent_micros"]),
            budget_micros=int(fields["budget_micros"]),
            period=str(fields["period"]),
            period_start=str(fields.get("period_start") or ""),
            at_ms=int(fields["at_ms"]),
            refused_micros=None if fields.get("refused_micros") is None else int(fields["refused_micros"]),
        )


def wire_id(alert_id: str, facts: AlertFacts) -> str:
    """The ``id`` receivers see: unique across the store, the same on every retry.

    Outbox ids are unique within their team's outbox only: a team alert's is
    ``team:m2026-11:800000`` in every team, so the team's name goes in (``team:design:m2026-11:
    800000``; team names hold no colon). A key's id already names its key (``key:<key_id>:...``).
    """
    if facts.scope == "team" and alert_id.startswith("team:"):
        return f"team:{facts.team}:{alert_id[len('team:') :]}"
    return alert_id


def body(alert_id: str, facts: AlertFacts) -> bytes:
    """The JSON POSTed for one alert (``alert_id``: its outbox id); the same facts always give
    the same bytes."""
    return orjson.dumps(body_json(alert_id, facts))


def body_json(alert_id: str, facts: AlertFacts) -> dict[str, Any]:
    """The alert's body as a dict (what :func:`body` serialises)."""
    payload: dict[str, Any] = {
        "id": wire_id(alert_id, facts),
        "type": TYPE,
        "scope": facts.scope,
        "team": facts.team,
    }
    if facts.scope == "key":
        payload["key_id"] = facts.key_id
        payload["key_name"] = facts.key_name
    payload.update(
        threshold=as_fraction(facts.threshold_ppm),
        spent_usd=micros_to_usd(facts.spent_micros),
        budget_usd=micros_to_usd(facts.budget_micros),
        period=facts.period,
        period_start=facts.period_start,
        at=iso_utc(facts.at_ms),
        text=sentence(facts),
    )
    if facts.refused_micros is not None:
        payload.update(exhausted=True, refused_call_usd=micros_to_usd(facts.refused_micros))
    return payload


def sentence(facts: AlertFacts) -> str:
    """One sentence a chat tool can show as it is, e.g. "Team design has spent $80.000000 of its
    $100.000000 monthly budget (80%)."; when one call jumped past the threshold, it says which."""
    who = f"Team {facts.team}"
    if facts.scope == "key":
        who = f"Key {facts.key_name or facts.key_id} of team {facts.team}"
    period = PERIOD_WORDS.get(facts.period, facts.period)
    if facts.refused_micros is not None:
        left = micros_to_usd(max(0, facts.budget_micros - facts.spent_micros))
        return (
            f"{who} has used up its ${micros_to_usd(facts.budget_micros)} {period} budget: "
            f"${micros_to_usd(facts.spent_micros)} spent leaves ${left}, which cannot cover a call "
            f"(this one asked for up to ${micros_to_usd(facts.refused_micros)}); its calls are refused "
            "until the budget resets or is raised."
        )
    spent_pct = percent(facts.spent_micros * PPM // max(facts.budget_micros, 1))
    threshold_pct = percent(facts.threshold_ppm)
    text = (
        f"{who} has spent ${micros_to_usd(facts.spent_micros)} of its "
        f"${micros_to_usd(facts.budget_micros)} {period} budget ({spent_pct}%"
    )
    if spent_pct != threshold_pct:
        return f"{text}), past its {threshold_pct}% alert threshold."
    return f"{text})."


def percent(ppm: int) -> str:
    """Millionths as a percentage without trailing zeros: 800000 -> "80", 555000 -> "55.5"."""
    value = (Decimal(ppm) / (PPM // 100)).quantize(Decimal("0.1"))
    return format(value.normalize(), "f")


def iso_utc(ms: int) -> str:
    """``2026-11-30T12:34:56.789Z``."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def signature(secret: bytes, raw_body: bytes) -> str:
    """The ``x-gateway-signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret, raw_body, hashlib.sha256).hexdigest()
