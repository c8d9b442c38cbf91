"""A test-only hook: an unexpected exception in the call path, provoked through a real gateway.

How a call ends when the gateway itself fails (a 500, counted, access-logged, its admission slot
and its reservation released) must be tested end to end, yet no honest input reaches such a
fault: each one that did was a defect, and was fixed. So a test starts the gateway with
``GATEWAY_TEST_FAULT_MARKER`` set, and a call whose body contains that text raises
:class:`InjectedFault` once the upstream has answered, just before the call would settle: before
anything is sent for an answer read whole, after the body was relayed for a large one.

Inert in production: the variable is not a setting (not read from ``.env``, not documented
among them, never set by deploy/), and unset, :func:`trip` is one comparison with None.
"""

from __future__ import annotations

import os

MARKER = os.environ.get("GATEWAY_TEST_FAULT_MARKER", "").encode() or None


class InjectedFault(RuntimeError):
    """Raised on purpose, for a test (see the module's docstring)."""


def trip(body: bytes) -> None:
    if MARKER is not None and MARKER in body:
        raise InjectedFault("a fault injected by GATEWAY_TEST_FAULT_MARKER")
