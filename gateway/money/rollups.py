"""What settle.lua adds up per team and UTC day (its rollups), read back as amounts.

settle.lua keeps, in the same step that charges a call, a team's per-model rollup
(``<model>|calls``, ``|images``, ``|spend``, ``|failed``), its per-key one
(``<key_id>|<what>|<model>``) and its per-user one (``<key_id>|<what>|<model>\x1f<user>``). This
module is the one reader of those field names: spend reports sum them, and the layout upgrade
rebuilds a team's rollups from its keys'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.money.micros import micros_to_usd
from gateway.store.protocol import text


@dataclass
class Amounts:
    """What a group of settled calls came to. ``failed``: calls that delivered no image (an
    upstream error, a timeout, an empty answer), so were charged nothing; the rest succeeded.
    Rollups written before ``failed`` was counted read as 0 failed."""

    calls: int = 0
    images: int = 0
    spend_micros: int = 0
    failed: int = 0

    @property
    def succeeded(self) -> int:
        return self.calls - self.failed

    def add(self, other: Amounts) -> None:
        self.calls += other.calls
        self.images += other.images
        self.spend_micros += other.spend_micros
        self.failed += other.failed

    def subtract(self, other: Amounts) -> None:
        self.calls -= other.calls
        self.images -= other.images
        self.spend_micros -= other.spend_micros
        self.failed -= other.failed

    def set(self, what: str, value: int) -> None:
        """One rollup field (``calls``, ``images``, ``spend``, ``failed``); others are ignored."""
        if what in ("calls", "images", "failed"):
            setattr(self, what, value)
        elif what == "spend":
            self.spend_micros = value

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "images": self.images,
            "spend_usd": micros_to_usd(self.spend_micros),
            "spend_micros": self.spend_micros,
            "succeeded": self.succeeded,
            "failed": self.failed,
        }

    def cells(self) -> list[str]:
        """In :data:`AMOUNT_COLUMNS` order: the new counts last, so positional readers still work."""
        amounts = [self.calls, self.images, micros_to_usd(self.spend_micros), self.succeeded, self.failed]
        return [str(a) for a in amounts]


AMOUNT_COLUMNS = ("calls", "images", "spend_usd", "succeeded", "failed")


def parse_rollup(raw: dict[bytes, bytes]) -> dict[str, Amounts]:
    """``{b"<model>|calls": b"3", ...}`` as amounts per model (a team's, or a legacy key's)."""
    per_model: dict[str, Amounts] = {}
    for name, value in raw.items():
        model, _, what = text(name).rpartition("|")
        per_model.setdefault(model, Amounts()).set(what, int(value))
    return {model: a for model, a in per_model.items() if a.calls or a.images or a.spend_micros}


def parse_keyed_rollup(raw: dict[bytes, bytes]) -> dict[tuple[str, str], Amounts]:
    """``{b"<key_id>|calls|<model>": b"3", ...}`` as amounts per (key_id, model)."""
    found: dict[tuple[str, str], Amounts] = {}
    for name, value in raw.items():
        key_id, what, model = text(name).split("|", 2)
        found.setdefault((key_id, model), Amounts()).set(what, int(value))
    return found


def parse_user_rollup(raw: dict[bytes, bytes]) -> dict[tuple[str, str, str], Amounts]:
    """``{b"<key_id>|calls|<model>\x1f<user>": b"3", ...}`` as amounts per (key_id, model, user)."""
    found: dict[tuple[str, str, str], Amounts] = {}
    for name, value in raw.items():
        key_id, what, rest = text(name).split("|", 2)
        model, _, user = rest.partition("\x1f")
        found.setdefault((key_id, model, user), Amounts()).set(what, int(value))
    return found
