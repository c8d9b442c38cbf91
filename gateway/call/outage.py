"""A Redis failure on the request path: counted, logged once, answered as a 503 envelope."""

from __future__ import annotations

import logging

from gateway.core import errors, metrics
from gateway.core.errors import GatewayError

log = logging.getLogger("gateway")


def note_store_failure(exc: BaseException) -> None:
    metrics.REDIS_ERRORS.inc()
    log.warning("redis error: %s: %s", exc.__class__.__name__, exc)


def store_unavailable(exc: BaseException) -> GatewayError:
    note_store_failure(exc)
    return errors.redis_unavailable()
