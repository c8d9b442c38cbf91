"""``gateway keys``: issue, list, show, update, revoke and rotate team keys, and show their usage."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.admin.keys import (
    DEFAULT_ROTATE_GRACE_S,
    KEY_ID_RE,
    KeyCreate,
    KeyLimits,
    KeyStore,
    parse_token,
    shown_key_id,
)
from gateway.admin.usage_report import usage_report
from gateway.cli.alerts import warn_if_no_webhook
from gateway.cli.audit import audited
from gateway.cli.common import (
    CommandError,
    Commands,
    add_json_option,
    plural,
    print_json,
    print_record,
    print_table,
    validated,
)
from gateway.cli.key_options import add_limit_options, limits_from_args
from gateway.cli.store import Access, run_with_redis

T = TypeVar("T")

LIST_COLUMNS = [
    "key_id",
    "team",
    "name",
    "status",
    "models",
    "budget_usd",
    "budget_period",
    "images_per_day",
    "rpm",
    "max_concurrent",
    "expires_at",
    "last4",
]


def add_keys_commands(commands: Commands) -> None:
    keys = commands.add_parser(
        "keys", help="issue and manage team keys", description="Issue and manage team keys."
    )
    sub = keys.add_subparsers(title="key commands", metavar="ACTION")

    create = sub.add_parser("create", help="issue a key (the secret is printed once)")
    create.add_argument("--team", required=True, help="the team the key bills to, e.g. design")
    create.add_argument("--name", required=True, help="what the key is for, e.g. poster-bot")
    add_limit_options(create, updating=False)
    create.set_defaults(handler=_create)

    listing = sub.add_parser("list", help="list keys and their limits (never their secrets)")
    listing.add_argument("--team", help="only this team's keys")
    add_json_option(listing)
    listing.set_defaults(handler=_list)

    for name, helptext, handler in (
        ("show", "show one key", _show),
        ("revoke", "revoke a key at once", _revoke),
        ("usage", "a key's budget, spend and reservations now", _usage),
    ):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("key_id", help="the key_id, or the whole key (sk-gw-...)")
        add_json_option(command)
        command.set_defaults(handler=handler)

    update = sub.add_parser("update", help="change a key's limits (only the options given)")
    update.add_argument("key_id")
    add_limit_options(update, updating=True)
    update.set_defaults(handler=_update)

    rotate = sub.add_parser("rotate", help="a new secret for the same key_id, limits and spend")
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace-seconds",
        type=int,
        default=DEFAULT_ROTATE_GRACE_S,
        help="how long the old secret keeps working (default 3600)",
    )
    add_json_option(rotate)
    rotate.set_defaults(handler=_rotate)


def _create(args: argparse.Namespace) -> int:
    spec = validated(KeyCreate, {"team": args.team, "name": args.name, **limits_from_args(args)})

    async def create(redis: Any) -> tuple[str, dict[str, Any]]:
        token, record = await KeyStore(redis).create(spec)
        await audited(redis, "key.create", key_id=record["key_id"], team=record["team"])
        return token, record

    token, record = run_with_redis(create, Access.WRITE)
    if args.json:
        print_json({**record, "key": token})
    else:
        print_record(record)
        print(f"\nkey (shown once, store it now):\n  {token}")
    warn_if_no_webhook(spec.alert_thresholds)
    return 0


def _list(args: argparse.Namespace) -> int:
    records = run_with_redis(lambda redis: KeyStore(redis).list(args.team))
    if args.json:
        print_json(records)
    else:
        print_table(LIST_COLUMNS, [[record.get(c) for c in LIST_COLUMNS] for record in records])
    return 0


def _one(
    given: str,
    action: Callable[[KeyStore, str], Awaitable[T | None]],
    access: Access,
    audit: str = "",
    **target: Any,
) -> T:
    """``action`` on the key store and the key given (its key_id, or the whole key, whose key_id is
    used once its secret matches); a key that does not exist is a one-line error that never prints
    a secret back. A change names its ``audit`` action (and what else it touched: ``target``) for
    the audit trail, which records the key_id, never what was given."""

    async def run(redis: Any) -> T | None:
        store = KeyStore(redis)
        key_id = await _key_id(store, given)
        if key_id is None:
            return None
        result = await action(store, key_id)
        if result is not None and audit:
            await audited(redis, audit, key_id=key_id, **target)
        return result

    result = run_with_redis(run, access)
    if result is None:
        raise CommandError(f"no key with {shown_key_id(given)}")
    return result


async def _key_id(store: KeyStore, given: str) -> str | None:
    """The key_id of what was given: a key_id, or a whole key of this store (revoked included)."""
    parsed = parse_token(given)
    if parsed is not None:
        return parsed[0] if await store.authenticate_parsed(*parsed) is not None else None
    return given if KEY_ID_RE.fullmatch(given) else None


def _print(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.json:
        print_json(record)
    else:
        print_record(record)


def _show(args: argparse.Namespace) -> int:
    _print(args, _one(args.key_id, lambda store, key_id: store.get(key_id), Access.READ))
    return 0


def _update(args: argparse.Namespace) -> int:
    limits = validated(KeyLimits, limits_from_args(args))
    fields = sorted(limits.model_fields_set)
    _print(
        args,
        _one(
            args.key_id,
            lambda store, key_id: store.update(key_id, limits),
            Access.WRITE,
            "key.update",
            fields=fields,
        ),
    )
    warn_if_no_webhook(limits.alert_thresholds)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    _print(args, _one(args.key_id, lambda store, key_id: store.revoke(key_id), Access.WRITE, "key.revoke"))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    token, record = _one(
        args.key_id,
        lambda store, key_id: store.rotate(key_id, args.grace_seconds),
        Access.WRITE,
        "key.rotate",
        grace_seconds=args.grace_seconds,
    )
    if args.json:
        print_json({**record, "key": token, "previous_key_valid_for_s": args.grace_seconds})
    else:
        print_record(record)
        grace = plural(args.grace_seconds, "second")
        print(f"\nnew key (shown once; the old one works {grace} more):\n  {token}")
    return 0


def _usage(args: argparse.Namespace) -> int:
    async def report(store: KeyStore, key_id: str) -> dict[str, Any] | None:
        space = await store.space_of(key_id)
        if space is None or await store.get_record(key_id) is None:
            return None
        return await usage_report(store.redis, space)

    _print(args, _one(args.key_id, report, Access.READ))
    return 0
