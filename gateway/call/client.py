"""Whether the caller is still there: asked without waiting, by the image and stream paths."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive


def client_has_left(receive: Receive) -> bool:
    """Whether the caller hung up, without waiting: one step of ``receive()``, never a suspension.

    Starlette's ``is_disconnected`` builds an anyio cancel scope on every call, on the hot path.
    The server's receive answers at once when the client is gone and otherwise waits for a
    message; stepping its coroutine once tells the two apart.
    """
    step: Any = receive()
    try:
        step.send(None)
    except StopIteration as done:
        return bool(done.value.get("type") == "http.disconnect")
    step.close()
    return False
