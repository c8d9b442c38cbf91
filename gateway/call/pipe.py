"""A bounded byte queue between a stream's reader and its response: backpressure, not memory.

The reader of an upstream's event stream puts what it relays here; the response takes it and
sends it to the caller. A caller that does not read makes the server's ``send`` wait (the
connection's flow control); the pipe then fills, its ``put`` waits, the reader stops reading the
upstream, and the upstream connection's own flow control stops the upstream in turn. So a slow
caller holds at most :attr:`Pipe.limit` bytes here, whatever the size of the stream.

A caller that has gone is another matter: the stream must still be read to its end and counted
(it is billed), so :meth:`Pipe.discard` drops what waits and everything put after it.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Pipe:
    """Pieces of bytes in order; ``put`` waits while ``limit`` bytes wait unsent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes waiting
        self._pieces: deque[bytes] = deque()
        self._closed = self._discarding = False
        self._room = asyncio.Event()
        self._room.set()
        self._ready = asyncio.Event()

    async def put(self, piece: bytes) -> None:
        """Queue ``piece``, first waiting for room (the caller's pace); dropped once discarding."""
        while self.held >= self.limit and not self._discarding:
            self._room.clear()
            await self._room.wait()
        self.put_now(piece)

    def put_now(self, piece: bytes) -> None:
        """Queue ``piece`` without waiting: a stream's last few bytes (its error event) only."""
        if self._discarding or not piece:
            return
        self._pieces.append(piece)
        self.held += len(piece)
        self._ready.set()

    def close(self) -> None:
        """Nothing more will be put: ``get`` answers None once the pieces are taken."""
        self._closed = True
        self._ready.set()

    def discard(self) -> None:
        """The caller has gone: drop what waits and whatever comes, and never make ``put`` wait."""
        self._discarding = True
        self._pieces.clear()
        self.held = 0
        self._room.set()

    async def get(self) -> bytes | None:
        """The next piece, or None once closed and empty."""
        while not self._pieces:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        piece = self._pieces.popleft()
        self.held -= len(piece)
        if self.held < self.limit:
            self._room.set()
        return piece
