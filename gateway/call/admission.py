"""How many image calls this process holds at once, and whether it still takes new ones.

Two counts, because a stranger must not be able to use up the capacity meant for teams:

- ``inflight``: calls whose key the reserve step has authenticated, capped by
  GATEWAY_MAX_INFLIGHT (memory is bounded by these calls x the upstream's answer size). A call
  is counted only from then on, so bodies that are still arriving, or made-up keys, take no slot.
- ``pending``: calls per client address that are not yet authenticated (body still arriving,
  or the key check under way), capped by GATEWAY_MAX_PENDING_PER_CLIENT. Together with the body
  deadline (GATEWAY_BODY_TIMEOUT_S) this bounds what one address can hold open without a key.
"""

from __future__ import annotations

from gateway.core import errors, metrics


class Admission:
    def __init__(self, max_inflight: int, max_pending_per_client: int) -> None:
        self.max_inflight = max_inflight
        self.inflight = 0
        self.max_pending_per_client = max_pending_per_client
        self.pending: dict[str, int] = {}  # client address -> calls not yet authenticated
        self.draining = False  # set on SIGTERM when GATEWAY_DRAIN_S > 0: /readyz answers 503

    def enter(self) -> None:
        """Count an authenticated call in; raises the 503 ``overloaded`` past the cap (still
        counted: call leave)."""
        self.inflight += 1
        metrics.INFLIGHT.inc()
        if self.inflight > self.max_inflight:
            raise errors.overloaded(self.max_inflight)

    def leave(self) -> None:
        self.inflight -= 1
        metrics.INFLIGHT.dec()

    def arrive(self, client: str) -> None:
        """Count a not-yet-authenticated call of ``client``; 429 past the per-address cap (not
        counted then: do not call :meth:`authenticated`)."""
        held = self.pending.get(client, 0)
        if held >= self.max_pending_per_client:
            raise errors.too_many_pending(self.max_pending_per_client)
        self.pending[client] = held + 1

    def authenticated(self, client: str) -> None:
        """The call of ``client`` is no longer pending: its key is known, or it was answered."""
        held = self.pending.get(client, 0) - 1
        if held > 0:
            self.pending[client] = held
        else:
            self.pending.pop(client, None)  # the table holds only addresses with calls pending


class Gate:
    """One call's passage through :class:`Admission`: pending from :meth:`arrive` until
    :meth:`admit` (key authenticated, now in flight); :meth:`release` undoes whatever is held."""

    def __init__(self, admission: Admission, client: str) -> None:
        self.admission, self.client = admission, client
        self.pending = False
        self.inflight = False

    def arrive(self) -> None:
        self.admission.arrive(self.client)
        self.pending = True

    def admit(self) -> None:
        """The key is known: stop counting the call as pending and count it in flight."""
        self._end_pending()
        self.inflight = True
        self.admission.enter()

    def release(self) -> None:
        self._end_pending()
        if self.inflight:
            self.inflight = False
            self.admission.leave()

    def _end_pending(self) -> None:
        if self.pending:
            self.pending = False
            self.admission.authenticated(self.client)
