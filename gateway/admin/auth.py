"""Admin authentication shared by the admin API and the console: the guessing limiter and the audit log.

**Guessing.** Every wrong admin token (a bearer token on ``/admin/v1`` or a console sign-in) is
counted per client address in Redis, in a sliding window of one minute. At
``GATEWAY_ADMIN_AUTH_MAX_FAILURES`` (10) failures the address is refused with 429 for
``GATEWAY_ADMIN_AUTH_BLOCK_S`` (300 s), whatever it sends, the right token included: so a guesser
learns nothing during the block. The state lives in Redis (one hash tag per address) so that every
worker and replica sees the same count: a per-process counter would give an attacker 10 guesses a
minute per worker per replica. If Redis does not answer, admin authentication answers 503 (the
admin API needs Redis for everything anyway), so a Redis outage never becomes a free guessing window.

**The client address** is the ASGI ``client``: uvicorn replaces it with the ``X-Forwarded-For``
address only when the connection comes from an address in ``FORWARDED_ALLOW_IPS`` (default
127.0.0.1). Behind a load balancer that must be set to the balancer's addresses, or every client
looks like the balancer and ten wrong tokens from anyone block the admin API for everyone.

**Audit.** :func:`audit` writes the authentication events (wrong tokens, blocks) as JSON lines on
stdout, whatever the log level; a block is also stored in the audit trail. Changes are audited
with their actor by gateway/admin/audit.py. Never a secret: the functions here take no token to log.
"""

from __future__ import annotations

import os
import time
from typing import Any

from starlette.requests import HTTPConnection

from gateway.admin.audit import AuditEntry, store, write_line
from gateway.core import metrics
from gateway.core.errors import GatewayError, rate_limited, redis_unavailable
from gateway.store.client import REDIS_ERRORS
from gateway.store.keyspace import PREFIX

WINDOW_MS = 60_000

# KEYS[1]: sorted set of failure times (ms); KEYS[2]: the block marker. Same hash tag, one slot.
# ARGV: now_ms, window_ms, max_failures, block_ms, a unique member. Returns the block in ms or 0.
# Sent with EVAL each time: it runs only for wrong tokens, and needs no script cache to go stale.
_FAIL = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[4])
end
return 0
"""


def client_address(conn: HTTPConnection) -> str:
    """The caller's address as uvicorn reports it (after trusted proxy headers)."""
    return conn.client.host if conn.client else "unknown"


def _keys(address: str) -> tuple[str, str]:
    tag = f"{PREFIX}:{{admin-auth:{address}}}"
    return f"{tag}:failures", f"{tag}:blocked"


class AuthLimiter:
    """Counts wrong admin tokens per client address and refuses an address that guessed too often."""

    def __init__(self, redis: Any, max_failures: int, block_s: int) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.block_ms = block_s * 1000

    async def check(self, address: str) -> None:
        """429 if ``address`` is cooling off (the block's remaining time in ``retry-after``)."""
        try:
            left_ms = int(await self.redis.pttl(_keys(address)[1]))
        except REDIS_ERRORS:
            raise redis_unavailable() from None
        if left_ms > 0:
            metrics.child(metrics.ADMIN_AUTH_FAILURES, "blocked").inc()
            raise blocked(-(-left_ms // 1000))

    async def failed(self, address: str) -> int:
        """Count one wrong token; returns the block just started in seconds, or 0."""
        metrics.child(metrics.ADMIN_AUTH_FAILURES, "invalid_token").inc()
        member = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"
        now_ms = int(time.time() * 1000)
        args = [now_ms, WINDOW_MS, self.max_failures, self.block_ms, member]
        try:
            block_ms = int(await self.redis.eval(_FAIL, 2, *_keys(address), *args))
        except REDIS_ERRORS:
            raise redis_unavailable() from None
        return block_ms // 1000


def blocked(retry_after_s: int) -> GatewayError:
    return rate_limited(
        "Too many wrong admin tokens from this address; try again later.",
        retry_after_s,
        reason="admin_auth_blocked",
    )


def limiter_of(conn: HTTPConnection) -> AuthLimiter:
    """The process's limiter, made on first use from the gateway's Redis and settings."""
    state = conn.app.state.gateway
    limiter: AuthLimiter | None = getattr(conn.app.state, "admin_auth_limiter", None)
    if limiter is None or limiter.redis is not state.redis:
        settings = state.settings
        limiter = AuthLimiter(state.redis, settings.admin_auth_max_failures, settings.admin_auth_block_s)
        conn.app.state.admin_auth_limiter = limiter
    return limiter


async def record_failure(conn: HTTPConnection, via: str) -> None:
    """A wrong admin token from ``conn``: count it, audit it, and audit the block it may start."""
    address = client_address(conn)
    block_s = await limiter_of(conn).failed(address)
    audit(conn, "admin.auth_failed", via=via, path=conn.url.path)
    if block_s:
        audit(conn, "admin.auth_blocked", via=via, block_s=block_s)
        entry = AuditEntry("admin.auth_blocked", "unknown", via, {"block_s": block_s}, address)
        await store(conn.app.state.gateway.redis, entry, conn.app.state.gateway.settings.audit_retention_days)


def audit(conn: HTTPConnection, action: str, **what: Any) -> None:
    """One audit line of an authentication event: when, from where (client address), what."""
    write_line({"ts": time.time(), "audit": action, "client": client_address(conn), **what})
