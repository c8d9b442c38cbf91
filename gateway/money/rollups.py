"""What settle.lua adds up per team and UTC day (its rollups), read back as amounts.

settle.lua keeps, in the same step that charges a call, a team's per-model rollup
(``<model>|calls``, ``|images``, ``|spend``, ``|failed``, ``|margin``), its per-key one
(``<key_id>|<what>|<model>``) and its per-user one (``<key_id>|<what>|<model>\x1f<user>``). A
call of a channel other than ``default`` has its channel after the model (``<model>\x1e<channel>``),
so rollups written before channels are the default channel's. This module is the one reader of
those field names: spend reports sum them, and the layout upgrade rebuilds a team's rollups from
its keys'.
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
    ``margin_micros``: spend minus what the calls cost the company at their channels, so the cost
    is ``spend - margin``. Rollups written before ``failed`` was counted read as 0 failed; before
    costs, as a margin of 0 (the cost was the price)."""

    calls: int = 0
    images: int = 0
    spend_micros: int = 0
    failed: int = 0
    margin_micros: int = 0

    @property
    def succeeded(self) -> int:
        return self.calls - self.failed

    @property
    def cost_micros(self) -> int:
        return self.spend_micros - self.margin_micros

    def add(self, other: Amounts) -> None:
        self.calls += other.calls
        self.images += other.images
        self.spend_micros += other.spend_micros
        self.failed += other.failed
        self.margin_micros += other.margin_micros

    def subtract(self, other: Amounts) -> None:
        self.calls -= other.calls
        self.images -= other.images
        self.spend_micros -= other.spend_micros
        self.failed -= other.failed
        self.margin_micros -= other.margin_micros

    def set(self, what: str, value: int) -> None:
        """One rollup field (``calls``, ``images``, ``spend``, ``failed``, ``margin``); others are ignored."""
        if what in ("calls", "images", "failed"):
            setattr(self, what, value)
        elif what in ("spend", "margin"):
            setattr(self, f"{what}_micros", value)

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "images": self.images,
            "spend_usd": micros_to_usd(self.spend_micros),
            "spend_micros": self.spend_micros,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cost_usd": micros_to_usd(self.cost_micros),
            "cost_micros": self.cost_micros,
            "margin_usd": micros_to_usd(self.margin_micros),
            "margin_micros": self.margin_micros,
        }

    def cells(self) -> list[str]:
        """In :data:`AMOUNT_COLUMNS` order: the new counts last, so positional readers still work."""
        counts = [str(a) for a in (self.calls, self.images, micros_to_usd(self.spend_micros), self.succeeded)]
        return [*counts, str(self.failed), micros_to_usd(self.cost_micros), micros_to_usd(self.margin_micros)]


AMOUNT_COLUMNS = ("calls", "images", "spend_usd", "succeeded", "failed", "cost_usd", "margin_usd")
DEFAULT_CHANNEL = "default"  # the channel of a rollup field that names none


def model_field(model: str, channel: str) -> str:
    """How settle.lua names a model in a rollup field: the channel after it, unless ``default``."""
    return model if channel == DEFAULT_CHANNEL else f"{model}\x1e{channel}"


def split_channel(field: str) -> tuple[str, str]:
    """``<model>`` or ``<model>\x1e<channel>`` as (model, channel)."""
    model, separated, channel = field.partition("\x1e")
    return model, channel if separated else DEFAULT_CHANNEL


def parse_rollup(raw: dict[bytes, bytes]) -> dict[tuple[str, str], Amounts]:
    """``{b"<model>|calls": b"3", ...}`` as amounts per (model, channel) (a team's, or a legacy key's)."""
    per_model: dict[tuple[str, str], Amounts] = {}
    for name, value in raw.items():
        model, _, what = text(name).rpartition("|")
        per_model.setdefault(split_channel(model), Amounts()).set(what, int(value))
    return {model: a for model, a in per_model.items() if a.calls or a.images or a.spend_micros}


def parse_keyed_rollup(raw: dict[bytes, bytes]) -> dict[tuple[str, str, str], Amounts]:
    """``{b"<key_id>|calls|<model>": b"3", ...}`` as amounts per (key_id, model, channel)."""
    found: dict[tuple[str, str, str], Amounts] = {}
    for name, value in raw.items():
        key_id, what, model = text(name).split("|", 2)
        found.setdefault((key_id, *split_channel(model)), Amounts()).set(what, int(value))
    return found


def parse_user_rollup(raw: dict[bytes, bytes]) -> dict[tuple[str, str, str, str], Amounts]:
    """``{b"<key_id>|calls|<model>\x1f<user>": b"3", ...}`` as amounts per (key_id, model,
    channel, user)."""
    found: dict[tuple[str, str, str, str], Amounts] = {}
    for name, value in raw.items():
        key_id, what, rest = text(name).split("|", 2)
        model, _, user = rest.partition("\x1f")
        found.setdefault((key_id, *split_channel(model), user), Amounts()).set(what, int(value))
    return found
