"""Every Redis key name the gateway uses, in one place.

All of one team key's state shares the hash tag ``{key_id}``, so each Lua script touches a single
slot and runs unchanged on Redis Cluster. Global keys (the key registry, the price table) are
only ever touched by plain commands, never inside a script next to per-key state.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "gw"
KEY_REGISTRY = f"{PREFIX}:keys"  # set of every key_id ever issued (reports iterate it)
PRICES = f"{PREFIX}:prices"  # hash model -> unit price in micro-USD per image
PRICE_HISTORY = f"{PREFIX}:prices:history"  # list of JSON price changes, oldest first
PRICE_FILE_APPLIED = f"{PREFIX}:prices:applied"  # hash model -> price last applied from config
DEMO_KEY = f"{PREFIX}:demo-key"  # key_id of the key `make run` issued last
STORE_ID = f"{PREFIX}:store-id"  # a random id naming this store; spooled settlements carry it


@dataclass(frozen=True)
class KeySpace:
    """The names of one team key's Redis state."""

    key_id: str

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self.key_id}}}"

    @property
    def record(self) -> str:
        return f"{self.tag}:key"

    @property
    def state(self) -> str:
        """Hash: reserved micro-USD, reserved images, in-flight count, GCRA time."""
        return f"{self.tag}:state"

    @property
    def reservations(self) -> str:
        """Hash: request id -> reservation."""
        return f"{self.tag}:res"

    @property
    def reservation_deadlines(self) -> str:
        """Sorted set: request id scored by the time its reservation is presumed orphaned."""
        return f"{self.tag}:resx"

    @property
    def cancelled(self) -> str:
        """Sorted set of request ids whose reserve timed out (their caller was told 503), by time."""
        return f"{self.tag}:cancelled"

    @property
    def settled(self) -> str:
        """Sorted set of recently settled request ids, so a replayed settlement counts once."""
        return f"{self.tag}:settled"

    @property
    def ledger(self) -> str:
        """Stream of usage records."""
        return f"{self.tag}:ledger"

    def spent(self, period_id: str) -> str:
        """Counter of micro-USD spent in a period: ``d2026-11-25``, ``m2026-11`` or ``total``."""
        return f"{self.tag}:spent:{period_id}"

    def images(self, day: str) -> str:
        return f"{self.tag}:images:{day}"

    def rollup(self, day: str) -> str:
        """Hash of per-model calls, images and spend for one UTC day."""
        return f"{self.tag}:rollup:{day}"

    def idempotency(self, idempotency_key_hash: str) -> str:
        return f"{self.tag}:idem:{idempotency_key_hash}"
