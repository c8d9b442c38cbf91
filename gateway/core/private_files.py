"""Local state only its owner can read: directories 0700, files 0600.

The state directory holds the embedded Redis (its data, its password), the spool of usage records,
the lock file, logs and, for demo runs, a local admin token and the demo key. Another local user
who can read any of it can read budgets and usage; one who can reach the Redis can write keys. So
``gateway serve`` runs with umask 077 (everything it and its children create is private), and
the directories it relies on are made private even when an older version created them 0755.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE_UMASK = 0o077
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def restrict_umask() -> int:
    """Make every file and directory this process (and its children) creates private to its owner."""
    return os.umask(PRIVATE_UMASK)


def private_directory(path: Path) -> Path:
    """Create ``path`` (and parents) 0700, and tighten it if it exists and is ours.

    A directory owned by someone else (a shared volume, a mount point) is left as it is: we
    cannot change it, and the private subdirectories beneath it protect their contents.
    """
    path.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    info = path.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o777 != DIRECTORY_MODE:
        with contextlib.suppress(PermissionError):
            path.chmod(DIRECTORY_MODE)
    return path


def read_secret(path: Path) -> str | None:
    """The secret stored in ``path``, or None if there is none (or it is empty)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def write_secret(path: Path, value: str) -> None:
    """Replace ``path`` with ``value``, the new file 0600 from its first byte (never readable by others)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def stored_secret(path: Path, prefix: str = "") -> str:
    """The secret kept in ``path``, made (256 random bits) and stored 0600 the first time."""
    existing = read_secret(path)
    if existing is not None:
        return existing
    value = prefix + secrets.token_urlsafe(32)
    write_secret(path, value)
    return value
