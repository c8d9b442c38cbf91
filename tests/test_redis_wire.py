"""gateway/store/wire.py: the same bytes as redis-py's packer, its send path and direct execution on
real sockets and a real Redis."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store import client as redis_client
from gateway.store import wire as redis_wire
from gateway.store.patience import MAX_PATIENCE, TICK_S, patient_timeout
from gateway.store.wire import FastSend, execute, fast, pack
from tests.support import RedisServer

PLAIN = Connection()
FAST = fast(Connection)()

SAMPLES: list[tuple[object, ...]] = [
    ("EVALSHA", "a" * 40, 2, "gw:{team:t}:x", "gw:{team:t}:y", 0, -17, 2**63, "提示", b"\x00\xff", ""),
    ("SET", "k", b""),
    ("HSET", "h", "f", "x" * 6000),
]


@pytest.mark.parametrize("args", SAMPLES)
def test_packs_the_bytes_redis_py_would(args: tuple[object, ...]) -> None:
    assert b"".join(FAST.pack_command(*args)) == b"".join(PLAIN.pack_command(*args))
    assert pack(args) is not None


def test_packed_strings_are_remembered_within_a_bound_and_never_change_the_bytes() -> None:
    """Strings are packed once and remembered; a stream of ever-new ones (request ids, a hostile
    caller's values) keeps the table bounded, and what is sent is redis-py's bytes throughout."""
    recurring = ("EVALSHA", "a" * 40, 2, "gw:{team:t}:x", "提示")
    for n in range(3 * redis_wire.FRAGMENT_CACHE_SIZE):
        args = (*recurring, f"req_{n}", n, b"raw")
        assert pack(args) == b"".join(PLAIN.pack_command(*args))
        assert len(redis_wire._FRAGMENTS) <= redis_wire.FRAGMENT_CACHE_SIZE
    assert "gw:{team:t}:x" in redis_wire._FRAGMENTS


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", 1.5),  # floats: redis-py's repr
        ("SET", "k", memoryview(b"abc")),
        ("SET", "k", "x" * 6001),  # large values stay separate buffers
        ("CONFIG GET", "maxclients"),  # a two-word command name is split by redis-py
    ],
)
def test_leaves_other_arguments_to_redis_py(args: tuple[object, ...]) -> None:
    assert pack(args) is None
    assert b"".join(FAST.pack_command(*args)) == b"".join(PLAIN.pack_command(*args))


@pytest.mark.parametrize("value", [True, None, object()])
def test_refuses_what_redis_py_refuses(value: object) -> None:
    with pytest.raises(DataError):
        FAST.pack_command("SET", "k", value)


def test_the_gateway_client_sends_through_it(redis_server: RedisServer) -> None:
    async def run() -> tuple[str, bytes | None, bytes | None]:
        client = await redis_client.connect(redis_server.url, max_connections=2)
        try:
            big = b"v" * (8 * 1024 * 1024)  # more than a socket buffer: the write has to wait
            await client.set("wire:big", big)
            await client.set("wire:small", "提示")
            kind = type(await client.connection_pool.get_connection()).__name__
            return kind, await client.get("wire:big"), await client.get("wire:small")
        finally:
            await client.aclose()

    kind, big, small = asyncio.run(run())
    assert kind == "FastConnection"
    assert big == b"v" * (8 * 1024 * 1024)
    assert small == "提示".encode()


@pytest.fixture
def deaf_server() -> Iterator[int]:
    """A server that accepts and never reads: a large write fills the socket buffers and stalls."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_write_that_cannot_finish_times_out(deaf_server: int) -> None:
    async def run() -> None:
        async def no_handshake(connection: Connection) -> None:
            """The deaf server would never answer HELLO."""

        connection = fast(Connection)(
            host="127.0.0.1", port=deaf_server, socket_timeout=0.5, redis_connect_func=no_handshake
        )
        assert isinstance(connection, FastSend)
        await connection.connect_check_health(check_health=False)
        try:
            with pytest.raises(RedisTimeoutError):
                await connection.send_command("SET", "k", b"x" * (64 * 1024 * 1024))
            assert not connection.is_connected  # half a command went out: never reused
        finally:
            await connection.disconnect()

    asyncio.run(run())


def test_execute_runs_scripts_and_survives_a_dropped_connection(redis_server: RedisServer) -> None:
    async def run() -> tuple[object, object, object]:
        client = await redis_client.connect(redis_server.url, max_connections=1)
        try:
            sha = await client.script_load("return {KEYS[1], ARGV[1]}")
            first = await execute(client, "EVALSHA", sha, 1, "wire:k", 7)
            with pytest.raises(NoScriptError):
                await execute(client, "EVALSHA", "0" * 40, 0)
            # Redis drops every client connection (a restart, a failover): the one connection of
            # the pool is dead, and the next command reconnects instead of failing.
            admin = Redis.from_url(redis_server.url)
            await admin.client_kill_filter(_type="normal", skipme=True)
            await admin.aclose()
            second = await execute(client, "EVALSHA", sha, 1, "wire:k", "提示")
            in_use = client.connection_pool.slots.in_use
            return first, second, in_use
        finally:
            await client.aclose()

    first, second, in_use = asyncio.run(run())
    assert first == [b"wire:k", b"7"]
    assert second == [b"wire:k", "提示".encode()]
    assert in_use == 0  # every slot given back, the failed attempt's too


@pytest.mark.parametrize("patient", [False, True])
def test_a_read_timer_does_not_count_the_workers_own_backlog(patient: bool) -> None:
    """In a burst the worker's loop ran seconds behind: the read timers of every Redis command in
    flight came due together, before the loop got round to the replies already there, and 64
    calls got 503 with Redis healthy. asyncio's own timeout (the case patient=False, redis-py's)
    fails this; the gateway's read timeout extends by how late the loop ran its timer."""

    async def run() -> None:
        timeout = patient_timeout(0.5) if patient else asyncio.timeout(0.5)
        async with timeout:
            await asyncio.sleep(0)
            time.sleep(1.0)  # the worker busy with everything else: its timers run late
            await asyncio.sleep(0.2)  # what is left of the wait once it is back (a reply to read)

    if patient:
        asyncio.run(run())
    else:
        with pytest.raises(TimeoutError):
            asyncio.run(run())


def test_patient_timeouts_share_one_watch_and_leave_other_cancellations_alone() -> None:
    """Many reads at once time out together, on time; one that ends in time is not cancelled
    afterwards; a cancellation from elsewhere stays a cancellation, not a timeout."""

    async def slow(seconds: float) -> str:
        try:
            async with patient_timeout(0.3):
                await asyncio.sleep(seconds)
        except TimeoutError:
            return "timeout"
        await asyncio.sleep(0.5)  # a pending cancel of the watch's would land here
        return "done"

    async def run() -> tuple[list[str], float, bool]:
        started = time.monotonic()
        outcomes = await asyncio.gather(*(slow(5.0) for _ in range(100)), slow(0.1), slow(0.2))
        elapsed = time.monotonic() - started
        task = asyncio.create_task(slow(5.0))
        await asyncio.sleep(0.1)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return outcomes, elapsed, True
        return outcomes, elapsed, False

    outcomes, elapsed, cancelled = asyncio.run(run())
    assert outcomes == ["timeout"] * 100 + ["done", "done"]
    assert 0.3 <= elapsed < 0.3 + TICK_S + 0.5 + 1.0  # the timeouts, the two 0.5 s tails, slack
    assert cancelled


def test_the_gateway_client_reads_with_the_patient_timeout(redis_server: RedisServer) -> None:
    async def run() -> object:
        client = await redis_client.connect(redis_server.url, max_connections=1)
        try:
            connection = await client.connection_pool.get_connection()
            await client.connection_pool.release(connection)
            assert type(connection).read_response is FastSend.read_response
            return await client.ping()
        finally:
            await client.aclose()

    assert asyncio.run(run()) is True


def test_a_silent_redis_still_times_out_on_time(deaf_server: int) -> None:
    async def run() -> float:
        async def no_handshake(connection: Connection) -> None:
            """The deaf server would never answer HELLO: only the reply parser is set up."""
            connection._parser.on_connect(connection)

        connection = fast(Connection)(
            host="127.0.0.1", port=deaf_server, socket_timeout=0.5, redis_connect_func=no_handshake
        )
        await connection.connect_check_health(check_health=False)
        started = time.monotonic()
        try:
            await connection.send_command("PING")
            with pytest.raises(RedisTimeoutError):
                await connection.read_response()
            assert not connection.is_connected  # its reply may still come: never reused
            return time.monotonic() - started
        finally:
            await connection.disconnect()

    assert 0.5 <= asyncio.run(run()) < 0.5 * MAX_PATIENCE
