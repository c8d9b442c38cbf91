"""``GATEWAY_WORKERS`` > 1 on Linux: one listening socket per worker, so the kernel spreads the
connections over the workers.

uvicorn's own supervisor binds one socket and hands it to every worker. Whichever worker wakes
first takes every connection waiting (an asyncio server accepts up to its backlog per wake-up),
so 32 keep-alive connections opened together often all landed on one worker while the other
idled, and two workers did hardly more than one. Here the parent binds one socket per
worker on the same address with ``SO_REUSEPORT``, and worker *i* always serves socket *i* (a
restarted worker gets its predecessor's): the kernel hashes each new connection (addresses and
ports) to one of the listening sockets, whatever the workers are busy with.

Everything else is uvicorn's: its ``Multiprocess`` supervisor (signals, health checks, restarts,
SIGTERM to every worker), its ``Server`` in each worker with the same ``Config`` (the bounded
httptools protocol, the graceful-shutdown timeout, ``GATEWAY_LISTEN_BACKLOG``, now per socket).
The parent listens before it starts the workers, so a connection that arrives while a worker is
starting waits in that worker's backlog instead of being refused.

``SO_REUSEPORT`` would let another process of the same user bind the same port and silently take
a share of the connections: the port is first bound without it, so a second gateway on a busy
port still fails to start. Elsewhere than Linux ``SO_REUSEPORT`` does not balance (BSD and macOS
give the connections to one socket), and uvicorn's shared socket is used.
"""

from __future__ import annotations

import logging
import socket
import sys

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

logger = logging.getLogger("uvicorn.error")


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` listening sockets on one address, in one ``SO_REUSEPORT`` group.

    With port 0 the first gets a free port from the kernel and the others join it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:  # refused if anyone listens
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is free
            probe.bind((host, port))
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ReusePortMultiprocess(Multiprocess):
    """uvicorn's supervisor, starting worker *i* on socket *i* only.

    The methods below are uvicorn's (0.54), with ``Process(self.config, self.sockets)`` replaced by
    :meth:`spawn`; tests/test_workers.py fails if a uvicorn upgrade adds another place that makes
    a worker. Changing the number of workers by signal (SIGTTIN, SIGTTOU) is not offered: each
    worker needs a socket of its own.
    """

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.failed_start = False

    def spawn(self, index: int) -> Process:
        process = Process(self.config, [self.sockets[index]])
        process.start()
        return process

    def init_processes(self) -> None:
        for index in range(self.processes_num):
            self.processes.append(self.spawn(index))

    def restart_all(self) -> None:
        """SIGHUP: replace each worker, its replacement serving before the old one is retired."""
        for index, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self.spawn(index)
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error(
                        "New child process [%s] was not ready in time; keeping worker [%s] and "
                        "aborting the restart.",
                        new_process.pid,
                        old_process.pid,
                    )
                return
            old_process.terminate()
            old_process.join()
            self.processes[index] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: kill it
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # would fail the same way on every restart
                logger.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                self.failed_start = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("Child process [%s] died", process.pid)
            self.processes[index] = self.spawn(index)

    def handle_ttin(self) -> None:
        logger.info("SIGTTIN ignored: GATEWAY_WORKERS sets the number of workers")

    def handle_ttou(self) -> None:
        logger.info("SIGTTOU ignored: GATEWAY_WORKERS sets the number of workers")


def serve(config: Config) -> None:
    """What ``uvicorn.run`` does with ``workers`` > 1, with one socket per worker."""
    try:
        sockets = bind_sockets(config.host, config.port, config.workers, config.backlog)
    except OSError as exc:
        logger.error(exc)
        sys.exit(STARTUP_FAILURE)
    host, port = sockets[0].getsockname()[:2]
    logger.info(
        "Uvicorn running on http://%s:%d with %d workers, one SO_REUSEPORT listening socket each",
        f"[{host}]" if ":" in host else host,
        port,
        config.workers,
    )
    supervisor = ReusePortMultiprocess(config, sockets)
    try:
        supervisor.run()
    finally:
        for sock in sockets:
            sock.close()
    if supervisor.failed_start:
        sys.exit(STARTUP_FAILURE)
