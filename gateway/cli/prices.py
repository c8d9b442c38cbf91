"""``gateway prices``: the per-image price table every replica shares through Redis."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.audit import audited
from gateway.cli.common import CommandError, Commands, add_json_option, print_json, print_table
from gateway.cli.store import Access, run_with_redis
from gateway.core.model_names import check_model_name
from gateway.core.settings import load_settings
from gateway.money import pricing
from gateway.money.micros import micros_to_usd, usd_to_micros


def add_prices_commands(commands: Commands) -> None:
    prices = commands.add_parser(
        "prices",
        help="show and change the price table",
        description="The per-image price table, shared by every replica through Redis.",
    )
    sub = prices.add_subparsers(title="price commands", metavar="ACTION")
    listing = sub.add_parser("list", help="the current prices")
    listing.add_argument("--history", action="store_true", help="also every change and when it took effect")
    add_json_option(listing)
    listing.set_defaults(handler=_list)
    setter = sub.add_parser("set", help="set one model's price in USD per image")
    setter.add_argument("model", help="the model's name, e.g. doubao-seedream-4-5-251128")
    setter.add_argument("price_usd", help="USD per image, at most six decimals, e.g. 0.135")
    add_json_option(setter)
    setter.set_defaults(handler=_set)


async def _read(redis: Any) -> tuple[dict[str, int], list[pricing.PriceChange]]:
    await pricing.seed_prices(redis, load_settings().prices_file)
    return await pricing.read_prices(redis), await pricing.price_history(redis)


def _list(args: argparse.Namespace) -> int:
    prices, history = run_with_redis(_read)
    rows = [{"model": m, "price_usd": micros_to_usd(p)} for m, p in sorted(prices.items())]
    changes = [change.as_json() for change in history]
    if args.json:
        print_json({"prices": rows, **({"history": changes} if args.history else {})})
        return 0
    print_table(["model", "price_usd"], [[r["model"], r["price_usd"]] for r in rows])
    if args.history:
        print()
        print_table(
            ["effective_at", "model", "price_usd", "source"],
            [[c["effective_at"], c["model"], c["price_usd"], c["source"]] for c in changes],
        )
    return 0


def _set(args: argparse.Namespace) -> int:
    try:
        micros = usd_to_micros(args.price_usd)
        check_model_name(args.model)
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    async def set_price(redis: Any) -> pricing.PriceChange:
        change = await pricing.set_price(redis, args.model, micros, "cli")
        await audited(redis, "price.set", model=args.model, price_usd=micros_to_usd(micros))
        return change

    change = run_with_redis(set_price, Access.WRITE)
    shown = change.as_json()
    if args.json:
        print_json(shown)
    else:
        print(f"{args.model}: ${shown['price_usd']} per image from {shown['effective_at']}")
    return 0
