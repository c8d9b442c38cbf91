"""The workers rows: ``GATEWAY_WORKERS=1`` and ``=2`` side by side, 32 keep-alive connections.

Nothing is pinned (two workers need both CPUs, and share them with the load generator, the
upstream stand-in and Redis: on a 2-CPU machine 2x is out of reach). The two gateways run at the
same time (the idle one costs nothing) and are measured in turns, best of ``repeat`` each. The
note gives the CPU of each worker: with uvicorn's shared socket, 32 connections opened together
often all landed on one of them; with a socket per worker (gateway/cli/workers.py) the kernel
spreads them. ``python -m bench --only-workers`` runs these rows alone (about a minute).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from bench.measure import interleaved, ratio, repin, say
from bench.stack import Proc, Stack

TARGET = 1.6  # the bar: 2 workers >= 1.6x one, on this machine with the load generator on it


def connections_per_process(port: int, pids: list[int]) -> dict[int, int]:
    """pid -> established connections to ``port`` whose socket it holds (/proc/net/tcp + fds)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # ESTABLISHED, ours
            inodes.add(f"socket:[{fields[9]}]")
    counts: dict[int, int] = {}
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        counts[pid] = sum(1 for link in links if link in inodes)
    return counts


class ConnectionSplit(threading.Thread):
    """Samples how the connections to a gateway are split over its processes while load runs;
    keeps the sample that saw the most connections."""

    def __init__(self, proc: Proc) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.best: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            sample = {p: n for p, n in connections_per_process(self.proc.port, self.proc.pids()).items() if n}
            if sum(sample.values()) > sum(self.best.values()):
                self.best = sample

    def text(self) -> str:
        return " / ".join(str(n) for n in sorted(self.best.values(), reverse=True)) or "not seen"


def run(
    b: Any,
    stack: Stack,
    gateway: Any,
    auth: list[str] | None,
    redis: Proc,
    fixed: Proc,
    repeat: int,
    make_key: Any = None,
) -> None:
    """Add the two rows to ``b`` (a bench.measure.Bench); Redis and the upstream float while they run.

    ``auth`` is the bench key's header, or None to create the key with ``make_key(port)``.
    """
    pinned, floating = b.pinned, b.floating
    say("workers (nothing pinned)")
    for proc in (redis, fixed):
        repin(proc, floating.rest)
    g1 = gateway(floating.sut, "gateway-w1")
    g2 = gateway(floating.sut, "gateway-w2", workers=2)
    if auth is None:
        auth = [f"Authorization: Bearer {make_key(g1.port)}"]
    spec = dict(connections=32, headers=auth, cpus=floating.rest)
    split_seen = ConnectionSplit(g2)
    split_seen.start()
    res = interleaved(
        b,
        {"w1": dict(port=g1.port, sut=g1, **spec), "w2": dict(port=g2.port, sut=g2, **spec)},
        repeat,
    )
    split_seen.done.set()
    split_seen.join()
    w1 = b.add("gateway, 1 worker, unpinned", "workers", res["w1"])
    split = sorted(res["w2"].get("sut_cpu_pct_per_process", {}).values(), reverse=True)[:2]
    uneven = len(split) == 2 and split[1] < 0.2 * split[0]
    w2 = b.add(
        "gateway, 2 workers, unpinned",
        "workers",
        res["w2"],
        note="CPU % of the two busiest gateway processes (the workers): "
        + " / ".join(f"{v:.0f}" for v in split)
        + (": one worker got (nearly) all 32 connections" if uneven else "")
        + f"; connections per worker: {split_seen.text()}",
    )
    stack.stop(g1)
    stack.stop(g2)
    for proc in (redis, fixed):
        repin(proc, pinned.rest)
    ratio(w1, 1.0, "1 worker", "reference")
    if w1.rps:
        value = w2.rps / w1.rps
        ratio(w2, value, "1 worker", f"{value:.2f}x 1 worker (target >= {TARGET}x)")
