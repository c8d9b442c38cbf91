"""The ledger record the sweeper writes for a call whose process died before it could settle.

A process killed mid-call (SIGKILL, OOM, a lost node) leaves its reservation behind, and the
upstream may bill the call. ``release_orphans`` in ``common.lua`` releases such a reservation and
appends this record to the key's ledger stream, so finance sees every call the upstream may bill.

The record is :class:`gateway.usage_record.UsageRecord` plus the script fields, like every other
ledger record. Its field names are not written in Lua: Python passes :func:`template` (every
UsageRecord field in order, with its value for an orphan) and the script fills in, by name, only
the fields in :data:`FILLED_BY_SCRIPT`, which it alone knows (who, which model, how many images).
A field added to UsageRecord must be given an orphan value here, or importing this module fails.

An orphan is not marked as settled: a process that was cut off from Redis, not dead, may still
settle the same request id later, and that settlement charges as usual. Finance then sees two
records for the request id: the ``orphaned`` one (no charge) and the later one, which is
authoritative.
"""

from __future__ import annotations

import orjson

from gateway.money.usage_record import SCRIPT_FIELDS, UsageRecord

OUTCOME = "orphaned"

# Filled in by release_orphans (common.lua), by these names, from the reservation and key record.
FILLED_BY_SCRIPT = frozenset(
    {"request_id", "ts_ms", "day", "team", "key_id", "key_name", "model", "n", "unit_price_micros"}
)

# What every orphan record says: nothing delivered, nothing charged, to be reconciled.
_FIXED: dict[str, str | int] = {
    "images": 0,
    "upstream_images": -1,
    "stream": 0,
    "user": "",  # not kept with the reservation: an orphan's end user is not known
    "over_delivered": 0,
    "channel": "",  # nor its channel, nor which attempt it was in
    "cost_micros": 0,
    "attempt": 0,
    "failed_over": 0,
    "charge_micros": 0,
    "upstream_status": 0,
    "upstream_latency_ms": 0,
    "outcome": OUTCOME,
    "client_left": 0,
    "reconcile": 1,
    # the script fields: its reservation was held until the sweeper released it
    "reserved": 1,
    "over_budget": 0,
}


def _template() -> bytes:
    names = [*UsageRecord.__dataclass_fields__, *SCRIPT_FIELDS]
    missing = [n for n in names if n not in FILLED_BY_SCRIPT and n not in _FIXED]
    stray = (FILLED_BY_SCRIPT | _FIXED.keys()) - set(names)
    if missing or stray:
        raise RuntimeError(f"orphan record out of step with UsageRecord: missing {missing}, stray {stray}")
    pairs: list[str] = []
    for name in names:
        pairs += [name, "" if name in FILLED_BY_SCRIPT else str(_FIXED[name])]
    return orjson.dumps(pairs)


# A JSON list of name, value strings: the argument reserve.lua and usage.lua take.
TEMPLATE = _template()
