"""The registries of every key and team ever issued (``gw:keys``, ``gw:teams``).

Reports, exports, the orphan sweep and the budget gauge list keys and teams from these sets, never
by SCAN, which would reach one node of a Cluster only.
"""

from __future__ import annotations

from typing import Any

from gateway.store.keyspace import KEY_REGISTRY, TEAM_REGISTRY
from gateway.store.protocol import text


async def registered_keys(redis: Any) -> list[str]:
    return sorted(text(k) for k in await redis.smembers(KEY_REGISTRY))


async def registered_teams(redis: Any) -> list[str]:
    return sorted(text(t) for t in await redis.smembers(TEAM_REGISTRY))
