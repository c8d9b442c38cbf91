"""Connecting to Redis: a single server, a Cluster (found out by itself), or Sentinel.

``GATEWAY_REDIS_URL`` may name any node of a Redis Cluster: the server's ``INFO cluster`` says
whether it is one, and then a cluster client is used, so a plain ``redis://host:port`` works for
both. Sentinel is addressed as
``redis+sentinel://[:password@]host1:26379,host2:26379/service_name[/db]``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

SOCKET_TIMEOUT_S = 2.0


async def connect(url: str) -> Any:
    """An async client for ``url``; raises if the server cannot be reached."""
    if url.startswith("redis+sentinel://"):
        return _sentinel_client(url)
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=10,
        max_connections=1000,
    )
    if await _is_cluster(client):
        await client.aclose()
        cluster = RedisCluster.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            max_connections=1000,
        )
        await cluster.initialize()
        return cluster
    return client


async def _is_cluster(client: aioredis.Redis) -> bool:
    try:
        info = await client.info("cluster")
    except Exception:  # an unreachable server is reported by the caller's first command
        return False
    return bool(info.get("cluster_enabled"))


def _sentinel_client(url: str) -> aioredis.Redis:
    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("redis+sentinel:// URL needs a service name: .../mymaster[/db]")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    password = unquote(parts.password) if parts.password else None
    sentinel = Sentinel(
        hosts,
        socket_timeout=SOCKET_TIMEOUT_S,
        password=password,
        sentinel_kwargs={"password": password} if password else None,
    )
    return sentinel.master_for(service, db=db, socket_timeout=SOCKET_TIMEOUT_S)


async def ping(client: Any) -> bool:
    try:
        return bool(await client.ping())
    except Exception:
        return False
