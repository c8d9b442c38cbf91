"""The ``gateway`` command: serve, simulate-upstream, keys, teams, prices, report, usage, alerts,
access, audit, admin-token.

One module per group of commands; this one only assembles the parser and turns the errors a
user can act on into one line and an exit code. Every command but ``serve`` and
``simulate-upstream`` talks to Redis directly (see ``store.py`` for which one), so it works
when no gateway runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.cli.access import add_access_commands
from gateway.cli.alerts import add_alerts_commands
from gateway.cli.audit import add_audit_commands
from gateway.cli.common import CommandError
from gateway.cli.demo import add_admin_token_command
from gateway.cli.keys import add_keys_commands
from gateway.cli.prices import add_prices_commands
from gateway.cli.reports import add_report_commands
from gateway.cli.serve import add_serve_command
from gateway.cli.simulator_process import add_simulate_command
from gateway.cli.teams import add_teams_commands
from gateway.core.settings import SettingsError
from gateway.store import embedded as embedded_redis

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except (embedded_redis.EmbeddedRedisError, CommandError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="OpenAI-compatible image generation gateway with team keys and exact budgets.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_serve_command(commands)
    add_simulate_command(commands)
    add_keys_commands(commands)
    add_teams_commands(commands)
    add_prices_commands(commands)
    add_report_commands(commands)
    add_alerts_commands(commands)
    add_admin_token_command(commands)
    add_access_commands(commands)
    add_audit_commands(commands)
    return parser
