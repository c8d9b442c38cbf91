"""Faults: how a test tells the simulator to misbehave on one request.

A fault is a comma-separated list of ``name=value`` pairs (``status=500,delay=1``), read from the
header, else the query, else the body field (the one way through the gateway). ``fail_images``
takes a list, so the items after it that have no ``=`` are more of its indices
(``fail_images=1,3,delay=1``). A malformed fault raises ``ValueError`` so a typo in a test fails
loudly instead of silently testing the happy path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.simulator.limits import FAULT_FIELD, FAULT_HEADER, MAX_DELAY, MAX_IMAGE_BYTES, MAX_IMAGES

DEFAULT_FAIL_CODE = "OutputImageSensitiveContentDetected"
FailedImages = tuple[int, ...] | Literal["all"]


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
    fail_images: FailedImages = ()  # indices of entries that fail, or "all"
    fail_code: str = DEFAULT_FAIL_CODE
    usage_images: int | str | None = None  # usage.generated_images to claim, or "none": no usage
    stream_gap: float | None = None
    break_after: int | None = None  # events sent before a stream's connection is dropped
    stall_after: int | None = None  # events sent before a stream goes quiet
    stall: float = MAX_DELAY  # how long it stays quiet

    def fails(self, index: int) -> bool:
        """Whether the entry at ``index`` of a set is a failed one."""
        return self.fail_images == "all" or index in self.fail_images

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


def _indices(value: str) -> FailedImages:
    if value.lower() == "all":
        return "all"
    indices = tuple(sorted({int(part) for part in value.split(",")}))
    if not indices or indices[0] < 0 or indices[-1] >= MAX_IMAGES:
        raise ValueError(f"must be all, or image indices from 0 to {MAX_IMAGES - 1}")
    return indices


def _usage_images(value: str) -> int | str:
    if value.lower() == "none":
        return "none"
    return int_in(0, MAX_IMAGES)(value)


_FAULT_FIELDS: dict[str, Callable[[str], Any]] = {
    "status": int_in(400, 599),
    "code": _code,
    "delay": seconds,
    "drop": _flag,
    "garbage": _garbage,
    "images": int_in(0, MAX_IMAGES),
    "image_bytes": int_in(0, MAX_IMAGE_BYTES),
    "fail_images": _indices,
    "fail_code": _code,
    "usage_images": _usage_images,
    "stream_gap": seconds,
    "break_after": int_in(0, MAX_IMAGES + 1),
    "stall_after": int_in(0, MAX_IMAGES + 1),
    "stall": seconds,
}
# Fields whose value is a comma-separated list: bare items after them continue the list.
_LIST_FIELDS = {"fail_images"}


def _pairs(spec: str) -> list[tuple[str, str, str]]:
    """(name, raw value, item as written) per pair, bare items joined to a preceding list field."""
    pairs: list[tuple[str, str, str]] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        if not sep and pairs and pairs[-1][0] in _LIST_FIELDS:
            last_name, last_raw, last_item = pairs[-1]
            pairs[-1] = (last_name, f"{last_raw},{item}", f"{last_item},{item}")
            continue
        name = name.strip().lower()
        if not sep or name not in _FAULT_FIELDS:
            known = ", ".join(_FAULT_FIELDS)
            raise ValueError(
                f"invalid simulator fault {item!r}: expected name=value with name one of {known}"
            )
        pairs.append((name, raw.strip(), item))
    return pairs


def parse_fault(spec: str) -> Fault:
    """Parse ``name=value,name=value``; raise ``ValueError`` naming the first bad pair."""
    values: dict[str, Any] = {}
    for name, raw, item in _pairs(spec):
        try:
            values[name] = _FAULT_FIELDS[name](raw)
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
