"""A throwaway redis-server for the benchmarks that talk to Redis alone (reports, one slot)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from gateway.store.embedded import redis_server_binary


@contextlib.contextmanager
def local_redis() -> Iterator[int]:
    """Start a redis-server on a free loopback port (no persistence); yield the port."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        server = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait(redis.Redis(port=port))
            yield port
        finally:
            server.terminate()
            server.wait(10)


def _wait(client: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
