"""The usage record: one per call that reached the upstream, the ledger finance reads.

Defined here once. The request path builds it (:func:`build`), settle.lua appends it to the key's
ledger stream as given plus the one field only the script knows (``reserved``), and exports read
it back in :data:`EXPORT_FIELDS` order. A field added here reaches the ledger and the exports.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields


# A field added later takes a default (what a record written before it existed meant) and its
# name in LATER_FIELDS, so its CSV column comes last.
@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    ts_ms: int  # when the call was settled (the stream id is when Redis wrote it)
    day: str  # the UTC day the call was reserved in: the day its spend counts under
    team: str
    key_id: str
    key_name: str
    model: str
    n: int  # images asked for
    # Images charged: the answer's entries that are images, up to what the call reserved (n, or
    # the sequential max_images); those beyond it are over_delivered. Delivered: the two summed.
    images: int
    upstream_images: int  # the upstream's usage.generated_images; -1 when it did not say
    unit_price_micros: int
    charge_micros: int  # money.charge_micros(images, unit_price_micros)
    upstream_status: int  # 0: no answer
    upstream_latency_ms: int
    outcome: str  # ok, timeout, connect, 5xx, 4xx, bad_response, ...
    client_left: int  # 1: the caller hung up before the answer; charged all the same
    reconcile: int  # 1: the upstream may have billed what the gateway could not count
    stream: int = 0  # 1: "stream": true, relayed as server-sent events
    user: str = ""  # OpenAI's "user" field as the caller sent it (validated); "" when absent
    # Images delivered beyond the reservation: not charged (a budget is a ceiling whatever the
    # upstream does), reconcile 1, so finance can settle them with the upstream. settle.lua
    # raises it if the order claimed more images than the reservation in Redis holds.
    over_delivered: int = 0
    channel: str = "default"  # the upstream channel of this attempt; "" when none was tried
    # What the images charged cost the company at that channel (its cost per image; the charge
    # when it has none configured). A record from before channels is read with its charge.
    cost_micros: int = 0
    attempt: int = 1  # which of the call's attempts this is: 1 for the first channel tried
    # 1: the call moved on to another channel after this attempt, which cannot have made an
    # image: charged nothing, and not a call of its own in reports (the call's record follows).
    failed_over: int = 0

    def stream_fields(self) -> list[str]:
        """Name, value strings, as settle.lua appends them to the stream.

        Not ``dataclasses.asdict``: it deep-copies every value, on every call, for nothing.
        """
        return [item for name in _FIELD_NAMES for item in (name, str(getattr(self, name)))]


_FIELD_NAMES = tuple(field.name for field in fields(UsageRecord))


# Written by settle.lua, not by the request path. reserved: 1 if the call's reservation was still
# held when it settled. over_budget: 1 if it was not, and this charge took the budget past its
# limit (a late settlement from a process cut off from Redis longer than its reservation lived).
SCRIPT_FIELDS = ("reserved", "over_budget")


# Record fields added after the script fields were first exported: their columns come after the
# script's, so a CSV reader that goes by column position keeps working.
LATER_FIELDS = ("user", "over_delivered", "channel", "cost_micros", "attempt", "failed_over")


# The record as exported, in CSV column order: the stream id, the record with the charge in USD
# beside the micro-USD one, then what the script adds, then LATER_FIELDS. A JSONL export also
# keeps unknown fields.
def _export_fields() -> tuple[str, ...]:
    names = ["ledger_id"]
    for name in UsageRecord.__dataclass_fields__:
        if name not in LATER_FIELDS:
            names += [name, *_DERIVED_AFTER.get(name, ())]
    later = [column for name in LATER_FIELDS for column in (name, *_DERIVED_AFTER.get(name, ()))]
    return (*names, *SCRIPT_FIELDS, *later)


# Columns the export computes after a stored one: ts_ms as ISO-8601 UTC, the charge in USD, the
# cost in USD and the margin (charge - cost) in USD.
_DERIVED_AFTER = {
    "ts_ms": ("time",),
    "charge_micros": ("charge_usd",),
    "cost_micros": ("cost_usd", "margin_usd"),
}
EXPORT_FIELDS = _export_fields()
# Export columns computed by the export, never stored.
DERIVED_FIELDS = ("ledger_id", *(column for columns in _DERIVED_AFTER.values() for column in columns))
INT_FIELDS = frozenset(
    name for name, spec in UsageRecord.__dataclass_fields__.items() if spec.type == "int"
) | frozenset(SCRIPT_FIELDS)
# Fields added to the record with a default: a record written before one existed is exported
# with the default (a record from before "user" had no end user: "", nor any over-delivery: 0),
# except its cost, which was its charge (no channel had a cost of its own).
DEFAULTS: dict[str, object] = {
    name: spec.default
    for name, spec in UsageRecord.__dataclass_fields__.items()
    if spec.default is not MISSING and name != "cost_micros"
}
