"""Faults: how a test tells the simulator to misbehave on one request.

A fault is a comma-separated list of ``name=value`` pairs (``status=500,delay=1``), read from the
header, else the query, else the body field (the one way through the gateway). A malformed fault
raises ``ValueError`` so a typo in a test fails loudly instead of silently testing the happy path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.simulator.limits import FAULT_FIELD, FAULT_HEADER, MAX_DELAY, MAX_IMAGE_BYTES, MAX_IMAGES


@dataclass(frozen=True, slots=True)
class Fault:
    """How one request should misbehave. The default instance means: behave."""

    status: int | None = None
    code: str | None = None
    delay: float | None = None
    drop: bool = False
    garbage: str | None = None  # "html" or "truncated"
    images: int | None = None
    image_bytes: int | None = None

    @property
    def forced_status(self) -> int | None:
        """The error status to answer, if any: a bare ``code`` means a 400, like content safety."""
        if self.status is not None:
            return self.status
        return 400 if self.code is not None else None


NO_FAULT = Fault()


def int_in(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``low`` to ``high``; also used by the command line."""

    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def seconds(value: str) -> float:
    """A wait in seconds, finite and at most ``MAX_DELAY``; also used by the command line."""
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= MAX_DELAY):
        raise ValueError(f"must be between 0 and {MAX_DELAY:g} seconds")
    return number


def _flag(value: str) -> bool:
    if value.lower() in {"1", "true", "yes"}:
        return True
    if value.lower() in {"0", "false", "no"}:
        return False
    raise ValueError("must be 1 or 0")


def _garbage(value: str) -> str | None:
    lowered = value.lower()
    if lowered in {"1", "true", "html"}:
        return "html"
    if lowered == "truncated":
        return "truncated"
    if lowered in {"0", "false"}:
        return None
    raise ValueError("must be 1 (an HTML page) or truncated (cut-off JSON)")


def _code(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


_FAULT_FIELDS: dict[str, Callable[[str], Any]] = {
    "status": int_in(400, 599),
    "code": _code,
    "delay": seconds,
    "drop": _flag,
    "garbage": _garbage,
    "images": int_in(0, MAX_IMAGES),
    "image_bytes": int_in(0, MAX_IMAGE_BYTES),
}


def parse_fault(spec: str) -> Fault:
    """Parse ``name=value,name=value``; raise ``ValueError`` naming the first bad pair."""
    values: dict[str, Any] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        parser = _FAULT_FIELDS.get(name)
        if not sep or parser is None:
            known = ", ".join(_FAULT_FIELDS)
            raise ValueError(
                f"invalid simulator fault {item!r}: expected name=value with name one of {known}"
            )
        try:
            values[name] = parser(raw.strip())
        except ValueError as exc:
            raise ValueError(f"invalid simulator fault {item!r}: {exc}") from None
    return Fault(**values) if values else NO_FAULT


def fault_spec(headers: Mapping[str, str], query: Mapping[str, str], payload: Any) -> str | None:
    """The fault text from the header, else the query, else the body: first non-empty wins."""
    spec = headers.get(FAULT_HEADER) or query.get(FAULT_FIELD)
    if spec:
        return spec
    if isinstance(payload, dict) and FAULT_FIELD in payload:
        value = payload[FAULT_FIELD]
        if not isinstance(value, str):
            raise ValueError(f"{FAULT_FIELD} must be a string")
        return value
    return None
