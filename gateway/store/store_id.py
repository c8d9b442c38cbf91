"""Which Redis store this process is connected to, so a spooled settlement reaches its own.

Two gateways started from one folder share its state directory (and so its spool) but not
always their Redis. A settlement spooled by one must not be replayed by the other into the wrong
store, where it would never reach the budget and ledger it belongs to. Each store therefore
names itself: the first process to connect sets ``gw:store-id`` to a random value (SET NX), and
every process reads it back. A spooled settlement carries the id; only a process connected to
the store with that id replays it.

The id lives in the store itself, so it moves with the data (a replica, a restore from AOF or
RDB keeps it). A store emptied by FLUSHALL gets a new id, and the records spooled for the old
one are then reported as foreign instead of replayed: an operator decides.
"""

from __future__ import annotations

import secrets

from gateway.store.keyspace import STORE_ID
from gateway.store.protocol import Redis, text


async def read_store_id(redis: Redis) -> str:
    """The store's id, set now if no process set it before (SET NX, so every process agrees)."""
    await redis.set(STORE_ID, secrets.token_hex(16), nx=True)
    value = await redis.get(STORE_ID)
    if value is None:  # deleted between the two commands: ask again next round
        raise LookupError("store id vanished")
    return text(value)
