"""Connecting to Redis: a single server, a Cluster (found out by itself), or Sentinel.

``GATEWAY_REDIS_URL`` may name any node of a Redis Cluster: the server's ``INFO cluster`` says
whether it is one, and then redis-py's cluster client is used, so a plain ``redis://host:port``
works for both. If the server does not answer at start-up, the choice waits for its first answer
(``DeferredClient``) rather than guessing: a plain client pointed at a cluster node would fail
with MOVED for every key that lives on another node while its pings succeed.

Sentinel is addressed as ``redis+sentinel://[:password@]host1:26379,host2:26379/service[/db]``
(``?sentinel_password=...`` when the sentinels' password differs from the master's).

Each worker opens at most ``max_connections`` (``GATEWAY_REDIS_MAX_CONNECTIONS``, 64) connections
to a single server or to the master of a Sentinel setup, and per node of a Cluster: commands share
them, waiting their turn in a burst (gateway/store/slots.py says why).

Every failure leaves the clients made here as a ``RedisError``: the cluster client raises some
outage errors (no reachable node, slot not covered) as ``RedisClusterException``, which is not
one, and callers catching ``REDIS_ERRORS`` would miss them and lose a settlement meant for the
spool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from gateway.store.slots import DEFAULT_MAX_CONNECTIONS, BoundedPool, BoundedSentinelPool, CommandSlots
from gateway.store.wire import fast

log = logging.getLogger("gateway.redis")

SOCKET_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 2.5

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
"""What a Redis operation raises when Redis is unreachable or refuses: catch this tuple."""


class ClusterClientError(RedisError):
    """A ``RedisClusterException`` (no reachable node, slot not covered, keys in two slots)."""


async def connect(url: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> Any:
    """An async client for ``url``. Never raises because Redis is down: commands will.

    ``max_connections`` bounds the connections this process opens (per node of a Cluster).
    """
    if url.startswith("redis+sentinel://"):
        client = sentinel_client(url, max_connections)
        client.follow_sentinels()
        return client
    try:
        return await _detect(url, max_connections)
    except REDIS_ERRORS as exc:
        log.warning("Redis at %s does not answer yet (%s); connecting when it does", _where(url), exc)
        return DeferredClient(url, max_connections)


async def _detect(url: str, max_connections: int) -> Any:
    """A cluster client if the server is a cluster node, else a single-server client."""
    single = _single_client(url, max_connections)
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
        await _open_all(single.connection_pool)
        return single
    await single.aclose()
    cluster = await _cluster_client(url, max_connections)
    log.info("Redis: cluster of %d primaries, found through %s", len(cluster.get_primaries()), _where(url))
    return cluster


def _single_client(url: str, max_connections: int) -> aioredis.Redis:
    # Not redis-py's BlockingConnectionPool: its condition, timeout and lock per command cost
    # Redis throughput; see gateway/store/slots.py.
    pool = BoundedPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)


async def _open_all(pool: Any) -> None:
    """Open every connection of the bound now, while the worker is idle.

    Connects made while a burst is being accepted miss the connect timeout, the event loop being
    that far behind, and their calls got 503 with Redis healthy. Opened at start-up, a burst finds
    them ready. Best effort: a failure here is only a connection opened later.
    """
    # All at once: one by one, the connects and handshakes would add up in every worker's start.
    results = await asyncio.gather(
        *(pool.get_connection() for _ in range(pool.max_connections)), return_exceptions=True
    )
    taken = [result for result in results if not isinstance(result, BaseException)]
    for connection in taken:
        await pool.release(connection)
    errors = [result for result in results if isinstance(result, BaseException)]
    unexpected = [error for error in errors if not isinstance(error, REDIS_ERRORS)]
    if unexpected:
        raise unexpected[0]
    if errors:
        log.warning(
            "Redis: opened %d of %d connections at start (%s)", len(taken), pool.max_connections, errors[0]
        )


async def _cluster_client(url: str, max_connections: int) -> GatewayCluster:
    try:
        cluster = cast(
            GatewayCluster,
            GatewayCluster.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=SOCKET_TIMEOUT_S,
                # Per node. The slots keep commands in flight under max_connections, so a node
                # reuses that many; connections being replaced after an error need the headroom.
                max_connections=2 * max_connections,
            ),
        )
    except RedisClusterException as exc:  # e.g. a database number other than 0
        raise ValueError(f"GATEWAY_REDIS_URL names a Redis Cluster node: {exc}") from None
    cluster.command_slots = CommandSlots(max_connections)
    _send_fast(cluster)
    try:
        await cluster.initialize()
    except RedisClusterException as exc:
        await cluster.aclose()
        raise ClusterClientError(str(exc)) from exc
    return cluster


def _send_fast(cluster: RedisCluster) -> None:
    """Every node's connections, known now or found later, send as ``gateway.redis_wire`` does."""
    manager = cluster.nodes_manager
    for kwargs in (cluster.connection_kwargs, manager.connection_kwargs):
        kwargs["connection_class"] = fast(kwargs["connection_class"])
    for node in (*manager.startup_nodes.values(), *manager.nodes_cache.values()):
        node.connection_class = fast(node.connection_class)


class GatewayCluster(RedisCluster):
    """redis-py's async cluster client, made to wait for a connection and raise only RedisErrors.

    Each node's pool raises ``MaxConnectionsError`` when full instead of waiting, so command
    slots bound the commands (and pipelines) in flight below the per-node cap; redis-py's
    retries on timeouts and MOVED happen inside one slot.
    """

    command_slots: CommandSlots  # set by _cluster_client

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await _in_slot(self.command_slots, super().execute_command(*args, **kwargs))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ClusterClientError("shard_hint is not supported in cluster mode")
        return _GatewayClusterPipeline(self, transaction)  # type: ignore[abstract]


class _GatewayClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        slots: CommandSlots = self.cluster_client.command_slots  # type: ignore[attr-defined]
        result: list[Any] = await _in_slot(slots, super().execute(raise_on_error, allow_redirections))
        return result


_HOLDING_SLOT: ContextVar[bool] = ContextVar("holding_redis_slot", default=False)


async def _in_slot(slots: CommandSlots, operation: Coroutine[Any, Any, Any]) -> Any:
    """Run a cluster command or pipeline in one of the slots, its outage errors as RedisErrors.

    A pipeline resends commands answered MOVED one by one through ``execute_command``: those
    run in the pipeline's slot, or pipelines holding every slot would wait for each other.
    """
    if _HOLDING_SLOT.get():
        return await _as_redis_error(operation)
    try:
        await slots.acquire()
    except BaseException:
        operation.close()  # never awaited: close it, or Python warns
        raise
    token = _HOLDING_SLOT.set(True)
    try:
        result = await _as_redis_error(operation)
    except BaseException as exc:
        # No reachable node or slot not covered: an outage as far as waiting is concerned.
        slots.outcome(RedisConnectionError() if isinstance(exc, ClusterClientError) else exc)
        raise
    finally:
        _HOLDING_SLOT.reset(token)
        slots.release()
    slots.outcome(None)
    return result


async def _as_redis_error(operation: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await operation
    except RedisClusterException as exc:
        raise ClusterClientError(f"{exc.__class__.__name__}: {exc}") from exc


class DeferredClient:
    """Stands in for the client until Redis first answers and says whether it is a cluster.

    Each command first makes sure the choice is made (one ``INFO`` while Redis is still away,
    failing like any command would); after that every attribute is the real client's.
    """

    def __init__(self, url: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self._url = url
        self._max_connections = max_connections
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def resolve(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await _detect(self._url, self._max_connections)
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


def sentinel_client(url: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> SentinelMaster:
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
        service,
        redis_class=SentinelMaster,
        connection_pool_class=BoundedSentinelPool,
        db=db,
        socket_timeout=SOCKET_TIMEOUT_S,
        max_connections=max_connections,
    )
    return client


class SentinelMaster(aioredis.Redis):
    """The master the sentinels name, asked again every second.

    redis-py asks the sentinels only when it opens a connection, and after a failover the old
    master keeps accepting writes until the sentinels get round to demoting it: spend written
    there is lost when it resyncs from the new master. Following the sentinels bounds that
    window to about a second (``min-replicas-to-write`` on the master closes it: see
    docs/operations.md).
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
