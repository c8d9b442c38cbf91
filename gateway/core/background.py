"""The gateway's background loops (price refresh, spool replay, layout check, orphan sweep,
alert sender) all stop the same way, defined once here."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped (None: it never started)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
