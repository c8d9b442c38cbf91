"""The secrets a key had before its rotations, each with its own grace period.

A rotation gives the key a new secret and lets the old one work for a grace period, so clients
can move over. A second rotation within that grace must not end the first one's grace, so the
key record keeps a small list of previous secrets (``prev_secrets``), each with its own expiry:
``<sha256 hex>:<valid until, epoch ms>`` entries joined by commas, newest first, at most
:data:`MAX_PREVIOUS` of them (past that the oldest goes at once: a key rotated more often than
that within one grace keeps only the latest grace periods). Expired entries are dropped at the
next rotation.

Read in two places, which must agree: ``KeyStore.authenticate_parsed`` (:func:`accepts`) and
reserve.lua (``previous_secret_ok``). Records rotated by the release before this one hold a
single ``prev_secret_hash`` / ``prev_valid_until`` pair; both readers still honour it, and the
next rotation folds it into the list.
"""

from __future__ import annotations

import hmac

MAX_PREVIOUS = 4
LEGACY_FIELDS = ("prev_secret_hash", "prev_valid_until")


def parse(text: str) -> list[tuple[str, int]]:
    entries = []
    for item in text.split(","):
        secret_hash, _, until = item.partition(":")
        if secret_hash and until.isdigit():
            entries.append((secret_hash, int(until)))
    return entries


def _all(record: dict[str, str]) -> list[tuple[str, int]]:
    entries = parse(record.get("prev_secrets", ""))
    legacy = record.get("prev_secret_hash")
    if legacy:
        entries.append((legacy, int(record.get("prev_valid_until", "0") or 0)))
    return entries


def after_rotation(record: dict[str, str], now_ms: int, grace_ms: int) -> str:
    """``prev_secrets`` once the current secret is replaced: it heads the list with its grace."""
    kept = [(h, until) for h, until in _all(record) if until > now_ms]
    entries = [(record["secret_hash"], now_ms + grace_ms), *kept][:MAX_PREVIOUS]
    return ",".join(f"{h}:{until}" for h, until in entries)


def accepts(record: dict[str, str], presented_hash: str, now_ms: int) -> bool:
    """Whether ``presented_hash`` is a previous secret still in its grace (constant-time compare)."""
    found = False
    for secret_hash, until in _all(record):
        found |= hmac.compare_digest(presented_hash, secret_hash) and now_ms < until
    return found
