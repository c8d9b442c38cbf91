"""Driving the load and keeping what it measured: the bench's rows and how the CPUs are shared.

``Bench.load`` runs ``bench/loadgen.py`` once in its own process and samples the processes under
watch over the counted window; ``Bench.add`` keeps the result as a ``Row``. The helpers here are
the ones every scenario needs (best of several runs, runs in turns, the bench key, the wrk
cross-check), so that bench/scenarios.py, bench/capacity.py and bench/workers.py share one copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.stack import PYTHON, ROOT, Proc, Stack, cpu_seconds, http_json, system_busy_seconds

MODEL = "doubao-seedream-4-5-251128"
BODY = {"model": MODEL, "prompt": "bench", "n": 1}
LARGE_FAULT = "images=4,image_bytes=8000000"
LARGE_BODY = {**BODY, "response_format": "b64_json", "simulator_fault": LARGE_FAULT}
UPSTREAM_LATENCY_S = 2.0
INFLIGHT_CONNECTIONS = 1000
LARGE_CONNECTIONS = 50


@dataclass
class Row:
    scenario: str
    section: str
    connections: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    ratio: float | None = None
    reference: str = ""
    ratio_text: str = ""
    rss_mb: float | None = None  # peak resident memory of the process under test during the scenario
    cpu_pct: dict[str, float] = field(default_factory=dict)
    loadgen_cpu_pct: float | None = None
    background_cpu_pct: float | None = None
    sut_cpu_us_per_req: float | None = None
    runs: list[float] = field(default_factory=list)  # req/s (or p50 ms) of each repetition
    requests: int = 0
    mean_response_bytes: float = 0.0
    note: str = ""


@dataclass
class Arrangement:
    """Which CPUs the process under test gets, and which everything else shares."""

    sut: frozenset[int] | None
    rest: frozenset[int] | None

    @property
    def text(self) -> str:
        if self.sut is None:
            return "not pinned: every process floats over all CPUs"
        return (
            f"process under test (passthrough or gateway) pinned to CPU {fmt_cpus(self.sut)}; "
            f"load generator, upstream stand-in and Redis pinned to CPU {fmt_cpus(self.rest)}"
        )


def fmt_cpus(cpus: frozenset[int] | None) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "all"


def arrangement(pin: bool) -> Arrangement:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return Arrangement(None, None)
    return Arrangement(frozenset(cpus[:1]), frozenset(cpus[1:]))


# -- load ---------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.pinned = arrangement(not args.no_pin)
        self.floating = Arrangement(None, None)
        self.rows: list[Row] = []
        self.watch: dict[str, Proc] = {}
        self.log = stack.workdir / "loadgen.log"

    def load(
        self,
        port: int,
        *,
        connections: int,
        cpus: frozenset[int] | None,
        sut: Proc | None,
        body: dict[str, Any] = BODY,
        headers: list[str] = (),  # type: ignore[assignment]
        warmup: float | None = None,
        duration: float | None = None,
        rounds: int = 0,
        stagger: float = 0.0,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Run the load generator once, sampling the watched processes' CPU over its window."""
        warmup = self.args.warmup if warmup is None else warmup
        duration = self.args.duration if duration is None else duration
        deadline = (60.0 + timeout) if rounds else warmup + duration + timeout + 5
        argv = [
            PYTHON,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--body",
            json.dumps(body),
            "--timeout",
            str(timeout),
            "--deadline",
            str(deadline),
        ]
        if rounds:
            argv += ["--rounds", str(rounds)]
        else:
            argv += ["--warmup", str(warmup), "--duration", str(duration), "--stagger", str(stagger)]
        for header in headers:
            argv += ["--header", header]
        watch = dict(self.watch)
        if sut is not None:
            watch["sut"] = sut
            sut.reset_peak()

        def pin() -> None:
            os.setpgrp()
            if cpus:
                os.sched_setaffinity(0, cpus)

        with open(self.log, "ab") as err:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                preexec_fn=pin,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.DEVNULL,
            )
        killer = threading.Timer(deadline + 15, proc.kill)
        killer.start()
        cpu0: dict[str, float] = {}
        cpu1: dict[str, float] = {}
        busy0 = busy1 = 0.0
        t0 = t1 = 0.0
        result: dict[str, Any] | None = None

        sut_pids = sut.pids() if sut is not None else []

        def sample() -> tuple[float, dict[str, float], float]:
            ours = {k: p.cpu_seconds() for k, p in watch.items()}
            ours["loadgen"] = cpu_seconds([proc.pid])
            if len(sut_pids) > 1:  # several workers: how the load spread over them
                ours.update({f"pid {pid}": cpu_seconds([pid]) for pid in sut_pids})
            return time.monotonic(), ours, system_busy_seconds()

        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("mark start"):
                    t0, cpu0, busy0 = sample()
                elif line.startswith("mark end"):
                    t1, cpu1, busy1 = sample()
                elif line.startswith("result "):
                    result = json.loads(line[len("result ") :])
            proc.wait(10)
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if result is None:
            raise RuntimeError(f"load generator failed (exit {proc.returncode}); see {self.log}")
        window = max(1e-6, t1 - t0)
        used = {k: cpu1.get(k, 0) - cpu0.get(k, 0) for k in cpu0}
        per_pid = {k: round(100 * used.pop(k) / window, 1) for k in list(used) if k.startswith("pid ")}
        result["cpu_pct"] = {k: round(100 * v / window, 1) for k, v in used.items() if k != "loadgen"}
        if per_pid:
            result["sut_cpu_pct_per_process"] = per_pid
        # CPU the machine spent on anything but this benchmark's processes (other users' jobs,
        # the kernel's own work, the hypervisor's steal): when high, the figures are disturbed.
        result["background_cpu_pct"] = round(max(0.0, 100 * (busy1 - busy0 - sum(used.values())) / window), 1)
        if sut is not None:
            result["peak_rss_mb"] = sut.peak_rss_mb()
            answered = result["requests"] + result["errors"]
            # What one request costs the process under test, in CPU: unlike req/s, hardly moved
            # by other jobs competing for the CPU.
            result["sut_cpu_us_per_req"] = 1e6 * used["sut"] / answered if answered else None
        return result

    def add(self, name: str, section: str, result: dict[str, Any], note: str = "", rss: bool = True) -> Row:
        row = Row(
            scenario=name,
            section=section,
            connections=int(result["connections"]),
            rps=result["rps"],
            p50_ms=result["p50_ms"],
            p99_ms=result["p99_ms"],
            errors=int(result["errors"]),
            error_kinds=result["error_kinds"],
            rss_mb=result.get("peak_rss_mb") if rss else None,
            cpu_pct=result["cpu_pct"],
            loadgen_cpu_pct=round(result["loadgen_cpu_pct"], 1),
            background_cpu_pct=result.get("background_cpu_pct"),
            sut_cpu_us_per_req=result.get("sut_cpu_us_per_req"),
            runs=result.get("runs", []),
            requests=int(result["requests"]),
            mean_response_bytes=result["mean_response_bytes"],
            note=note,
        )
        self.rows.append(row)
        say(
            f"  {name:<34} c{row.connections:<5} {row.rps:>7.0f} req/s  p50 {ms(row.p50_ms):>7}  "
            f"p99 {ms(row.p99_ms):>7}  errors {row.errors}  cpu {fmt_cpu(row)}, background "
            f"{row.background_cpu_pct}"
        )
        return row


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def fmt_cpu(row: Row) -> str:
    order = ["sut", "upstream", "redis"]
    parts = [f"{k} {row.cpu_pct[k]:.0f}" for k in order if k in row.cpu_pct]
    if row.loadgen_cpu_pct is not None:
        parts.append(f"loadgen {row.loadgen_cpu_pct:.0f}")
    return ", ".join(parts)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ratio(row: Row, value: float | None, reference: str, text: str) -> None:
    row.ratio, row.reference, row.ratio_text = value, reference, text


# -- runs in turns, best kept ----------------------------------------------------------------------


def by_cpu(row: Row, reference: Row) -> str:
    """The ratio by CPU per request, which a shared machine moves less than req/s, as a suffix."""
    if not (row.sut_cpu_us_per_req and reference.sut_cpu_us_per_req):
        return ""
    return f" ({reference.sut_cpu_us_per_req / row.sut_cpu_us_per_req:.1%} by CPU per request)"


def best(results: list[dict[str, Any]], latency: bool) -> dict[str, Any]:
    """The least disturbed of several repetitions: highest throughput, or lowest p50 at 1 connection.

    Interference (other jobs on the machine, the hypervisor) only ever slows a run down, so the
    best repetition is the closest to what the code costs; every repetition is kept in ``runs``.
    """
    if latency:
        chosen = min(results, key=lambda r: r["p50_ms"] if r["p50_ms"] is not None else math.inf)
        chosen["runs"] = [round(r["p50_ms"] or 0, 3) for r in results]
    else:
        chosen = max(results, key=lambda r: r["rps"])
        chosen["runs"] = [round(r["rps"]) for r in results]
    return chosen


def interleaved(b: Bench, specs: dict[str, dict[str, Any]], repeat: int) -> dict[str, dict[str, Any]]:
    """Run each spec ``repeat`` times, round robin (A B C A B C ...), and keep the best of each."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
    for _ in range(repeat):
        for name, spec in specs.items():
            runs[name].append(b.load(**spec))
    return {name: best(runs[name], specs[name]["connections"] == 1) for name in specs}


# -- the gateway and wrk ----------------------------------------------------------------------------


def repin(proc: Proc, cpus: frozenset[int] | None) -> None:
    target = cpus or frozenset(os.sched_getaffinity(0))
    for pid in proc.pids():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, target)


def create_key(port: int, admin: str) -> str:
    status, body = http_json(
        "POST",
        port,
        "/admin/v1/keys",
        {
            "team": "bench",
            "name": "bench",
            "budget_usd": "1000000",
            "budget_period": "total",
            "rpm": 100000000,
        },
        admin,
    )
    if status != 201:
        raise RuntimeError(f"could not create the bench key: {status} {body}")
    return str(body["key"])


def smoke(port: int, key: str) -> None:
    status, body = http_json("POST", port, "/v1/images/generations", BODY, key)
    if status != 200:
        raise RuntimeError(f"the gateway does not answer the bench request: {status} {body}")


def wrk_row(b: Bench, name: str, sut: Proc, arr: Arrangement, headers: list[str] = ()) -> Row:  # type: ignore[assignment]
    """The same 32-connection figure measured by wrk, as a cross-check of the Python load generator."""
    script = b.stack.workdir / "post.lua"
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = '{json.dumps(BODY)}'",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    for header in headers:
        hname, _, value = header.partition(": ")
        lines.append(f'wrk.headers["{hname}"] = "{value}"')
    script.write_text("\n".join(lines) + "\n")
    duration = max(1, round(b.args.duration))
    argv = [
        "wrk",
        "-t1",
        "-c32",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{sut.port}/v1/images/generations",
    ]
    if arr.rest:
        argv = ["taskset", "-c", fmt_cpus(arr.rest), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {m[0]: wrk_ms(m[1]) for m in re.findall(r"\s(50|99)%\s+([\d.]+\w+)", out)}
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    row = Row(name, "cost", 32, rps, lat.get("50"), lat.get("99"), errors, note="wrk -t1 -c32, cross-check")
    say(f"  {name:<34} {rps:>9.0f} req/s  p50 {ms(row.p50_ms):>8}  p99 {ms(row.p99_ms):>8}  errors {errors}")
    return row


def wrk_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", text)
    assert match is not None
    value, unit = float(match[1]), match[2]
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
