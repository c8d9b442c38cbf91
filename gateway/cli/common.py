"""What every ``gateway`` command shares: its error type and how it prints.

Tables are aligned by display width, not by ``len``: a CJK team or key name takes two columns
per character in a terminal, and padding by characters would shift every column after it.
"""

from __future__ import annotations

import argparse
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
ModelT = TypeVar("ModelT", bound=BaseModel)


class CommandError(Exception):
    """A command failed for a reason the user can act on; printed as one line, exit code 1."""


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide and full-width characters count two, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal columns."""
    return text + " " * max(0, width - display_width(text))


def plural(count: int, noun: str) -> str:
    """'1 request', '2 requests'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def cell(value: Any) -> str:
    """How one value is shown in a table or record: None as '-', lists comma-separated."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "-"
    return str(value)


def print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def print_record(record: Mapping[str, Any]) -> None:
    """One object as 'name  value' lines."""
    width = max(display_width(name) for name in record)
    for name, value in record.items():
        print(f"{pad(name, width)}  {cell(value)}")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows under a header, each column as wide as its widest cell (in terminal columns)."""
    cells = [[cell(value) for value in row] for row in rows]
    widths = [
        max([display_width(name)] + [display_width(row[index]) for row in cells])
        for index, name in enumerate(columns)
    ]
    for line in [list(columns), *cells]:
        print("  ".join(pad(text, width) for text, width in zip(line, widths, strict=True)).rstrip())


def validated(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """``model`` built from ``data``; the first validation error as a one-line CommandError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise CommandError(f"{where}: {first['msg']}" if where else str(first["msg"])) from None


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
