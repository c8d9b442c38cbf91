"""Cheaper command sending for redis-py's asyncio connections: the hot path's two scripts.

Every call sends two EVALSHA commands (reserve, settle) of 30 to 40 arguments each. Two things in
redis-py 8's ``Connection`` cost more than the rest of the command together, as a profile of one
worker under load shows:

- ``pack_command`` runs every argument through ``Encoder.encode`` (type checks, ``repr`` for
  ints) and builds the message by re-joining a growing buffer per argument. The gateway's
  arguments are only ``str``, ``bytes`` and ``int``; those are packed here in one join, anything
  else goes to redis-py's own packer.
- ``send_packed_command`` wraps every write in ``asyncio.wait_for``, which on Python 3.11
  creates a task and a timer for each command. A small command leaves the socket in one
  ``send`` and there is nothing to wait for; only a write that the kernel did not take whole
  (a full socket buffer) waits, under the same ``socket_timeout``.

And one thing in how it waits for an answer: ``socket_timeout`` (2 s) is measured on the event
loop's clock, so in a burst (thousands of calls arriving at once on one worker) a reply that had
long arrived waited behind the worker's own backlog, the timer fired first, and the call got 503
with Redis healthy. Here a read times out after ``socket_timeout``
of Redis' silence (gateway/store/patience.py): when the check finds the loop itself was late by more
than ``LOOP_LAG_S``, the reply gets that much longer (within ``MAX_PATIENCE``); a stalled Redis
still times out on time when the worker is not the one behind.

Everything else (connecting, health checks, reading, errors) is redis-py's. The mixin goes in
front of whichever class redis-py picked for the URL (TCP, TLS, Unix socket, Sentinel).

:func:`execute` runs one command on a single server's or Sentinel master's bounded pool without
``Redis.execute_command``'s per-command layers (observability recording, event dispatch, option
handling), which cost a sizeable share of the client's CPU per EVALSHA, with the same connection
handling and the same retry policy (``connection.retry``, which redis-py applies too).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, TypeVar, cast

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store.patience import patient_timeout

# Larger arguments keep redis-py's handling (it sends them as separate buffers, unjoined).
SMALL_ARGUMENT_BYTES = 6000
FRAGMENT_CACHE_SIZE = 4096  # packed strings kept: ~1 MB at most (arguments are small)
_FRAGMENTS: dict[str, bytes] = {}


def pack(args: tuple[Any, ...]) -> bytes | None:
    """The RESP message for ``args``, or None if one of them is not a plain str, bytes or int.

    The command name may not hold a space (redis-py splits ``"CONFIG GET"`` into two words;
    those go to redis-py's packer too).

    Most strings recur from call to call (key names of the same key and day, record field names,
    models, script hashes), so each string's packed form is kept in :data:`_FRAGMENTS`, and a
    settle's ~75 arguments are mostly joined, not packed. The table is emptied when full, not evicted
    entry by entry: strings seen once (request ids) cycle through it, the recurring ones come back
    on their next use, and its size stays bounded whatever callers send.
    """
    fragments = _FRAGMENTS
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is str:
            fragment = fragments.get(arg)
            if fragment is None:
                fragment = _fragment(arg.encode())
                if fragment is None:
                    return None
                if len(fragments) >= FRAGMENT_CACHE_SIZE:
                    fragments.clear()
                fragments[arg] = fragment
            append(fragment)
            continue
        if kind is int:
            value = b"%d" % arg
            append(b"$%d\r\n%s\r\n" % (len(value), value))
            continue
        fragment = _fragment(arg) if kind is bytes else None
        if fragment is None:  # bool, float, memoryview, None...: redis-py decides (and refuses)
            return None
        append(fragment)
    if b" " in parts[1]:
        return None
    return b"".join(parts)


def _fragment(value: bytes) -> bytes | None:
    if len(value) > SMALL_ARGUMENT_BYTES:
        return None
    return b"$%d\r\n%s\r\n" % (len(value), value)


class FastSend:
    """Mixin for a redis-py ``AbstractConnection`` subclass: see the module's docstring."""

    def pack_command(self, *args: Any) -> list[bytes]:
        packed = pack(args)
        if packed is None:
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]
        return [packed]

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        connection: Any = self
        limit = connection.socket_timeout
        if timeout is not None or not limit:  # a caller's own timeout keeps redis-py's meaning
            return await super().read_response(  # type: ignore[misc]
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
            )
        try:
            async with patient_timeout(limit):
                # Cancelled by the timeout, redis-py drops the connection (its reply is unread).
                return await super().read_response(  # type: ignore[misc]
                    disable_decoding,
                    math.inf,  # no timeout of its own: the one above
                    disconnect_on_error=disconnect_on_error,
                    push_request=push_request,
                )
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout reading from {connection._host_error()}") from None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        connection: Any = self
        if not connection.is_connected:
            await connection.connect_check_health(check_health=False)
        if check_health:
            await connection.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer = connection._writer
        try:
            writer.writelines(command)
            transport = writer.transport
            if transport.get_write_buffer_size() == 0 and not transport.is_closing():
                return  # the kernel took it all
            async with asyncio.timeout(connection.socket_timeout):
                await writer.drain()
        except TimeoutError:
            await connection.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await connection.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # Part of the command may be sent: the connection cannot be reused (redis-py's rule).
            await connection.disconnect(nowait=True)
            raise


async def execute(client: Any, *args: Any) -> Any:
    """``client.execute_command(*args)`` for a command whose answer needs no parsing callback
    (EVALSHA, EVAL): straight on a connection of the client's bounded pool, else redis-py's way
    (a Cluster, a client not made by gateway.redis_client)."""
    pool = getattr(client, "connection_pool", None)
    if getattr(pool, "slots", None) is None or getattr(client, "connection", None) is not None:
        return await client.execute_command(*args)
    connection = await pool.get_connection()  # type: ignore[union-attr]
    try:
        packed = connection.pack_command(*args)

        async def send_and_read() -> Any:
            await connection.send_packed_command(packed)
            return await connection.read_response()

        async def failed(error: BaseException, count: int) -> None:
            await connection.disconnect()  # the retry reconnects, as redis-py's own does

        return await connection.retry.call_with_retry(send_and_read, failed, with_failure_count=True)
    finally:
        await pool.release(connection)  # type: ignore[union-attr]


C = TypeVar("C", bound=AbstractConnection)
_MADE: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def fast(connection_class: type[C]) -> type[C]:
    """``connection_class`` with :class:`FastSend` in front (one class per base, made once)."""
    if issubclass(connection_class, FastSend):
        return connection_class
    made = _MADE.get(connection_class)
    if made is None:
        name = f"Fast{connection_class.__name__}"
        made = _MADE[connection_class] = type(name, (FastSend, connection_class), {})
    return cast("type[C]", made)
