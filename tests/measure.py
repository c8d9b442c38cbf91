"""What a hostile answer costs a real gateway process: its memory and whether it still answers.

Memory is the resident size of the gateway's whole process tree (``gateway serve`` and its
workers), read from /proc; liveness is ``/healthz`` asked over and over while the hostile call is
in flight. Both are sampled by a thread beside the test, so the test itself can drive the call.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support import TLS, Gateway, wait_until


def rss_kb(pid: int) -> int:
    """VmRSS of a process and its descendants (a worker may run as a child of ``gateway serve``)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except FileNotFoundError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending += [int(child) for child in task.read_text().split()]
            except FileNotFoundError:
                continue
    return total


def gateway_rss(gw: Gateway) -> int:
    assert gw.process is not None
    return rss_kb(gw.process.pid)


class Watch:
    """Samples the gateway's memory and ``/healthz``'s answer time until the ``with`` block ends.

    ``peak_kb - before_kb`` is what the block cost in memory; ``slowest_healthz_s`` the longest
    ``/healthz`` took to answer meanwhile (a worker whose event loop is stuck answers late).
    """

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.before_kb = self.peak_kb = gateway_rss(gw)
        self.slowest_healthz_s = 0.0
        self.healthz_answers = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._memory), threading.Thread(target=self._liveness)]

    @property
    def grew_kb(self) -> int:
        return self.peak_kb - self.before_kb

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        # /healthz is being asked before the block starts, so every moment of it is covered.
        wait_until(lambda: self.healthz_answers > 0, what="/healthz answering before the block")
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        # The question in flight when the block ended was asked while it ran: wait for its answer.
        asked = self.healthz_answers
        wait_until(lambda: self.healthz_answers > asked, timeout_s=60, what="/healthz answering")
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _memory(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kb = max(self.peak_kb, gateway_rss(self.gw))

    def _liveness(self) -> None:
        with httpx.Client(base_url=self.gw.url, verify=TLS, timeout=60) as client:
            while not self._stop.wait(0.05):
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                self.slowest_healthz_s = max(self.slowest_healthz_s, time.monotonic() - started)
                self.healthz_answers += 1
