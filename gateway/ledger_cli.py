"""`gateway report` and `gateway usage`: finance's commands (filled in by the ledger work)."""

from __future__ import annotations

from typing import Any


def add_report_commands(commands: Any) -> None:
    return None
