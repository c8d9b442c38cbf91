"""Connecting to Redis: a single server, a Cluster (found out by itself), or Sentinel.

``GATEWAY_REDIS_URL`` may name any node of a Redis Cluster: the server's ``INFO cluster`` says
whether it is one, and then redis-py's cluster client is used, so a plain ``redis://host:port``
works for both. If the server does not answer at start-up, the choice waits for its first answer
(``DeferredClient``) rather than guessing: a plain client pointed at a cluster node would fail
with MOVED for every key that lives on another node while its pings succeed.

Sentinel is addressed as ``redis+sentinel://[:password@]host1:26379,host2:26379/service[/db]``
(``?sentinel_password=...`` when the sentinels' password differs from the master's).

Every failure leaves the clients made here as a ``RedisError``: the cluster client raises some
outage errors (no reachable node, slot not covered) as ``RedisClusterException``, which is not
one, and callers catching ``REDIS_ERRORS`` would miss them and lose a settlement meant for the
spool.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

log = logging.getLogger("gateway.redis")

SOCKET_TIMEOUT_S = 2.0
# Each in-flight request runs at most one Redis command at a time, so this many commands at once
# covers 1,000 in-flight requests. Beyond it commands wait (up to SOCKET_TIMEOUT_S for a single
# server) instead of failing: redis-py's pools raise when full, which would turn a burst into 503s.
MAX_COMMANDS = 1000
SINGLE_SERVER_CONNECTIONS = 20_000
READY_TIMEOUT_S = 2.5

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
"""What a Redis operation raises when Redis is unreachable or refuses: catch this tuple."""


class ClusterClientError(RedisError):
    """A ``RedisClusterException`` (no reachable node, slot not covered, keys in two slots)."""


async def connect(url: str) -> Any:
    """An async client for ``url``. Never raises because Redis is down: commands will."""
    if url.startswith("redis+sentinel://"):
        client = sentinel_client(url)
        client.follow_sentinels()
        return client
    try:
        return await _detect(url)
    except REDIS_ERRORS as exc:
        log.warning("Redis at %s does not answer yet (%s); connecting when it does", _where(url), exc)
        return DeferredClient(url)


async def _detect(url: str) -> Any:
    """A cluster client if the server is a cluster node, else a single-server client."""
    single = _single_client(url)
    try:
        info = await single.info("cluster")
    except ResponseError as exc:  # INFO refused (an ACL): not a cluster node we could use anyway
        log.warning("INFO cluster refused (%s); using %s as a single server", exc, _where(url))
        info = {}
    except BaseException:
        await single.aclose()
        raise
    if not info.get("cluster_enabled"):
        log.info("Redis: single server at %s", _where(url))
        return single
    await single.aclose()
    cluster = await _cluster_client(url)
    log.info("Redis: cluster of %d primaries, found through %s", len(cluster.get_primaries()), _where(url))
    return cluster


def _single_client(url: str) -> aioredis.Redis:
    # A plain pool, not redis-py's BlockingConnectionPool: that one's lock, timeout and pid check
    # per command cost a quarter of Redis throughput here (26.7k vs 33.4k EVALSHA/s at 32 at
    # once). It never fills: a request runs one command at a time and each worker caps its
    # requests in flight (GATEWAY_MAX_INFLIGHT) far below SINGLE_SERVER_CONNECTIONS.
    pool = ConnectionPool.from_url(
        url,
        max_connections=SINGLE_SERVER_CONNECTIONS,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)


async def _cluster_client(url: str) -> GatewayCluster:
    try:
        cluster = GatewayCluster.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            # The semaphore keeps commands under MAX_COMMANDS; pipelines and connections being
            # replaced after an error need the headroom.
            max_connections=2 * MAX_COMMANDS,
        )
    except RedisClusterException as exc:  # e.g. a database number other than 0
        raise ValueError(f"GATEWAY_REDIS_URL names a Redis Cluster node: {exc}") from None
    try:
        await cluster.initialize()
    except RedisClusterException as exc:
        await cluster.aclose()
        raise ClusterClientError(str(exc)) from exc
    return cluster


class GatewayCluster(RedisCluster):
    """redis-py's async cluster client, made to wait for a connection and raise only RedisErrors.

    Each node's pool raises ``MaxConnectionsError`` when full instead of waiting, so a semaphore
    bounds the commands in flight below the per-node cap.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._command_slots = asyncio.Semaphore(MAX_COMMANDS)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._command_slots:
            try:
                return await super().execute_command(*args, **kwargs)
            except RedisClusterException as exc:
                raise ClusterClientError(f"{exc.__class__.__name__}: {exc}") from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ClusterClientError("shard_hint is not supported in cluster mode")
        return _GatewayClusterPipeline(self, transaction)


class _GatewayClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            raise ClusterClientError(f"{exc.__class__.__name__}: {exc}") from exc


class DeferredClient:
    """Stands in for the client until Redis first answers and says whether it is a cluster.

    Each command first makes sure the choice is made (one ``INFO`` while Redis is still away,
    failing like any command would); after that every attribute is the real client's.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def resolve(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await _detect(self._url)
        return self._client

    def __getattr__(self, name: str) -> Any:
        client = self.__dict__.get("_client")
        if client is not None:
            return getattr(client, name)
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "pipeline":
            raise RedisConnectionError(f"Redis at {_where(self._url)} has not answered yet")

        async def deferred(*args: Any, **kwargs: Any) -> Any:
            client = await self.resolve()
            return await getattr(client, name)(*args, **kwargs)

        return deferred

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def sentinel_client(url: str) -> SentinelMaster:
    """A client for the master that the sentinels name; see ``SentinelMaster``."""
    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("redis+sentinel:// URL needs a service name: .../mymaster[/db]")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    password = unquote(parts.password) if parts.password else None
    query = parse_qs(parts.query)
    sentinel_password = query["sentinel_password"][0] if "sentinel_password" in query else password
    sentinel = Sentinel(
        hosts,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        password=password,
        sentinel_kwargs={"password": sentinel_password or None, "socket_timeout": SOCKET_TIMEOUT_S},
    )
    log.info("Redis: master %r as named by the sentinels at %s", service, hosts)
    client: SentinelMaster = sentinel.master_for(
        service, redis_class=SentinelMaster, db=db, socket_timeout=SOCKET_TIMEOUT_S
    )
    return client


class SentinelMaster(aioredis.Redis):
    """The master the sentinels name, asked again every second.

    redis-py asks the sentinels only when it opens a connection, and after a failover the old
    master keeps accepting writes until the sentinels get round to demoting it: spend written
    there is lost when it resyncs from the new master. Following the sentinels bounds that
    window to about a second (``min-replicas-to-write`` on the master closes it: see
    docs/production.md).
    """

    _follower: asyncio.Task[None] | None = None

    def follow_sentinels(self, every_s: float = 1.0) -> None:
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow(every_s), name="sentinel-follower")

    async def _follow(self, every_s: float) -> None:
        pool = self.connection_pool
        while True:
            await asyncio.sleep(every_s)
            try:
                await self._check_master(pool)
            except Exception as exc:  # noqa: BLE001 - the follower must outlive any one failure
                log.debug("sentinels not answering: %s", exc)

    @staticmethod
    async def _check_master(pool: Any) -> None:
        address = await pool.sentinel_manager.discover_master(pool.service_name)
        old = pool.master_address
        if old is not None and address != old:
            pool.master_address = address
            await pool.disconnect()  # in-use ones too: none may go on writing to the old master
            log.warning("Redis: sentinels name a new master %s (was %s)", address, old)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None
        await super().aclose(close_connection_pool)


async def ping(client: Any) -> bool:
    """Readiness: can this client run the gateway's commands now?

    On a cluster a plain PING reaches one node only: every primary must answer and see the
    cluster as ``ok``, or the keys on the missing node would fail while this pod looks ready.
    """
    try:
        return await asyncio.wait_for(_usable(client), READY_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


async def _usable(client: Any) -> bool:
    if isinstance(client, DeferredClient):
        client = await client.resolve()
    if not isinstance(client, RedisCluster):
        return bool(await client.ping())
    primaries = client.get_primaries()
    states = await asyncio.gather(*(client.cluster_info(target_nodes=node) for node in primaries))
    return bool(primaries) and all(state.get("cluster_state") == "ok" for state in states)


def _where(url: str) -> str:
    """``host:port`` of a URL, for logs: never its password."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url.split("?", 1)[0]
