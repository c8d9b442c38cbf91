"""How many image calls this process holds at once, and whether it still takes new ones."""

from __future__ import annotations

from gateway import errors, metrics


class Admission:
    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.inflight = 0
        self.draining = False  # set on SIGTERM when GATEWAY_DRAIN_S > 0: /readyz answers 503

    def enter(self) -> None:
        """Count a call in; raises the 503 ``overloaded`` past the cap (still counted: call leave)."""
        self.inflight += 1
        metrics.INFLIGHT.inc()
        if self.inflight > self.max_inflight:
            raise errors.overloaded(self.max_inflight)

    def leave(self) -> None:
        self.inflight -= 1
        metrics.INFLIGHT.dec()
