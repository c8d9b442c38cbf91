"""``gateway access``: named admin credentials with a role (grant, list, revoke).

The same store as ``/admin/v1/access`` (admin/access.py); every grant and revocation is audited
with the OS user as actor. A revocation ends the credential's console sessions at their next request.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.admin.access import CredentialSpec, CredentialStore, NameTaken
from gateway.admin.roles import ROLES
from gateway.cli.audit import audited, os_user
from gateway.cli.common import (
    CommandError,
    Commands,
    add_json_option,
    print_json,
    print_record,
    print_table,
    validated,
)
from gateway.cli.store import Access, run_with_redis
from gateway.store.protocol import Redis

LIST_COLUMNS = [
    "name",
    "role",
    "teams",
    "status",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "last4",
]


def add_access_commands(commands: Commands) -> None:
    parser = commands.add_parser(
        "access",
        help="named admin credentials with a role",
        description="Named admin credentials: admin (everything), finance (reads everything, sets team "
        "budgets), team-admin (the keys of its teams only). Their tokens work on /admin/v1 and the console.",
    )
    sub = parser.add_subparsers(title="access commands", metavar="ACTION")
    grant = sub.add_parser("grant", help="a new credential (its token is printed once)")
    grant.add_argument("name", help="who or what holds it, e.g. alice@example.com or ci-reports")
    grant.add_argument("--role", required=True, choices=ROLES)
    grant.add_argument("--team", action="append", dest="teams", help="team-admin: a team it manages (repeat)")
    grant.add_argument("--expires", help="ISO 8601 time with its offset, e.g. 2027-01-31T18:00:00+01:00")
    add_json_option(grant)
    grant.set_defaults(handler=_grant)
    listing = sub.add_parser("list", help="every credential (never a token)")
    add_json_option(listing)
    listing.set_defaults(handler=_list)
    revoke = sub.add_parser("revoke", help="revoke a credential at once, with its console sessions")
    revoke.add_argument("name")
    add_json_option(revoke)
    revoke.set_defaults(handler=_revoke)


def _grant(args: argparse.Namespace) -> int:
    spec = validated(
        CredentialSpec,
        {"name": args.name, "role": args.role, "teams": args.teams, "expires_at": args.expires},
    )

    async def grant(redis: Redis) -> tuple[str, dict[str, Any]]:
        try:
            token, record = await CredentialStore(redis).grant(spec, created_by=os_user())
        except NameTaken:
            raise CommandError(
                f"a credential named {spec.name!r} exists: revoke it first, or choose another name"
            ) from None
        await audited(
            redis,
            "access.grant",
            name=spec.name,
            role=spec.role,
            teams=spec.teams,
            expires_at=record["expires_at"],
        )
        return token, record

    token, record = run_with_redis(grant, Access.WRITE)
    if args.json:
        print_json({**record, "token": token})
    else:
        print_record(record)
        print(f"\ntoken (shown once, hand it over now):\n  {token}")
    return 0


def _list(args: argparse.Namespace) -> int:
    records = run_with_redis(lambda redis: CredentialStore(redis).list())
    if args.json:
        print_json(records)
    else:
        print_table(LIST_COLUMNS, [[record.get(c) for c in LIST_COLUMNS] for record in records])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    async def revoke(redis: Redis) -> dict[str, Any] | None:
        record = await CredentialStore(redis).revoke(args.name)
        if record is not None:
            await audited(redis, "access.revoke", name=args.name, role=record["role"])
        return record

    record = run_with_redis(revoke, Access.WRITE)
    if record is None:
        raise CommandError(f"no credential named {args.name!r} in force")
    if args.json:
        print_json(record)
    else:
        print_record(record)
    return 0
