"""The price table: one unit price per model, in integer micro-USD.

Prices live in Redis so that every replica charges the same price; each process keeps a copy that
it refreshes every second. A reservation and its usage record carry the unit price they were made
at, so a price change never re-prices a call already in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from gateway.core import background
from gateway.core.model_names import check_model_name
from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.store.keyspace import PRICE_FILE_APPLIED, PRICE_HISTORY, PRICES

log = logging.getLogger("gateway.pricing")

DEFAULT_PRICES_USD: dict[str, str] = {
    "doubao-seedream-4-0-250828": "0.162",
    "doubao-seedream-4-5-251128": "0.135",
    "doubao-seedream-5-0-260128": "0.135",
}


def load_prices_file(path: Path) -> dict[str, int]:
    """Read a YAML price table: ``models: {name: {price_usd: "0.162"}}`` (or ``name: "0.162"``)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    models = data.get("models", data) if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError(f"{path}: expected a mapping 'models: {{name: {{price_usd: ...}}}}'")
    prices: dict[str, int] = {}
    for name, spec in models.items():
        raw = spec.get("price_usd") if isinstance(spec, dict) else spec
        if raw is None:
            raise ValueError(f"{path}: model {name!r} has no price_usd")
        try:
            check_model_name(str(name))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        prices[str(name)] = usd_to_micros(raw)
    return prices


def configured_prices(prices_file: Path | None) -> dict[str, int]:
    """The built-in defaults overlaid with the prices file, if any."""
    prices = {name: usd_to_micros(usd) for name, usd in DEFAULT_PRICES_USD.items()}
    if prices_file is not None:
        prices.update(load_prices_file(prices_file))
    return prices


@dataclass(frozen=True)
class PriceChange:
    model: str
    price_micros: int | None
    effective_at_ms: int
    source: str

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "price_usd": None if self.price_micros is None else micros_to_usd(self.price_micros),
            "effective_at": _iso(self.effective_at_ms),
            "source": self.source,
        }


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


async def set_price(redis: Any, model: str, price_micros: int | None, source: str) -> PriceChange:
    """Change (or, with None, withdraw) one model's price and record when it took effect."""
    if price_micros is not None:
        check_model_name(model)  # a withdrawal takes any name: a bad one stored earlier can go
    change = PriceChange(model, price_micros, int(time.time() * 1000), source)
    async with redis.pipeline(transaction=False) as pipe:
        if price_micros is None:
            pipe.hdel(PRICES, model)
        else:
            pipe.hset(PRICES, model, price_micros)
        pipe.rpush(PRICE_HISTORY, orjson.dumps(change.__dict__))
        await pipe.execute()
    return change


async def seed_prices(redis: Any, prices_file: Path | None) -> None:
    """Apply the configured table at start-up without undoing later admin changes.

    A configured price is written only when it differs from the one last applied from
    configuration, so editing the file and restarting takes effect, while a restart with an
    unchanged file leaves a price set through the admin API alone.
    """
    wanted = configured_prices(prices_file)
    applied = await redis.hgetall(PRICE_FILE_APPLIED)
    source = "file" if prices_file else "default"
    for model, micros in wanted.items():
        previous = applied.get(model.encode())
        if previous is not None and int(previous) == micros:
            continue
        await set_price(redis, model, micros, source)
        await redis.hset(PRICE_FILE_APPLIED, model, micros)


async def read_prices(redis: Any) -> dict[str, int]:
    raw = await redis.hgetall(PRICES)
    return {k.decode(): int(v) for k, v in raw.items()}


async def price_history(redis: Any) -> list[PriceChange]:
    return [PriceChange(**orjson.loads(item)) for item in await redis.lrange(PRICE_HISTORY, 0, -1)]


class PriceBook:
    """This process's copy of the price table, refreshed from Redis in the background.

    The configured table is seeded into Redis on the first refresh that reaches it, not only at
    start-up: a gateway started while Redis was unreachable would otherwise read an empty table
    from a fresh store once Redis came up, and answer every call 404 ``model_not_found``.
    """

    def __init__(
        self,
        prices: dict[str, int] | None = None,
        refresh_s: float = 1.0,
        prices_file: Path | None = None,
    ) -> None:
        self.prices: dict[str, int] = dict(prices or {})
        self.refresh_s = refresh_s
        self.prices_file = prices_file
        self.seeded = False
        self._task: asyncio.Task[None] | None = None

    def get(self, model: str) -> int | None:
        return self.prices.get(model)

    def model_label(self, model: str) -> str:
        """Model names from the price table, anything else ``other``: metric labels stay bounded."""
        return model if model in self.prices else "other"

    async def refresh(self, redis: Any) -> None:
        if not self.seeded:
            await seed_prices(redis, self.prices_file)
            self.seeded = True
        self.prices = await read_prices(redis)

    def start(self, redis: Any) -> None:
        self._task = asyncio.create_task(self._loop(redis), name="price-refresh")

    async def stop(self) -> None:
        await background.cancel(self._task)

    async def _loop(self, redis: Any) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh(redis)
            except Exception as exc:  # Redis down: keep charging the last known prices.
                log.warning("price refresh failed: %s", exc.__class__.__name__)
