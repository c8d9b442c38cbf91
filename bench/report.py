"""What a run found, as one report: the JSON document, the printed table, the markdown, the targets.

Kept apart from the measuring so that the shape of ``latest.json`` and ``latest.md`` is read in one
place; the rows come from bench/measure.py, the scenarios that fill them from bench/scenarios.py.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.measure import Arrangement, Row, ms
from bench.stack import ROOT

RESULTS = Path(__file__).resolve().parent / "results"


def build_report(
    rows: list[Row],
    targets: list[dict[str, Any]],
    pinned: Arrangement,
    floating: Arrangement,
    args: argparse.Namespace,
    started: float,
) -> dict[str, Any]:
    """The run as one document: what was measured, on what, how, and against which targets."""
    return {
        "machine": machine(),
        "arrangement": {"cost, in flight, large images": pinned.text, "workers": floating.text},
        "loadgen": "bench/loadgen.py (Python: raw asyncio protocols + httptools + uvloop, one process)",
        "windows": {
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "latency_duration_s": args.latency_duration,
            "repeat": args.repeat,
            "inflight_duration_s": args.inflight_duration,
            "large_rounds": args.large_rounds,
        },
        "rows": [asdict(r) for r in rows],
        "targets": targets,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def check_targets(gw32: Row, gw1: Row, g_in: Row, g_big: Row, d_big: Row) -> list[dict[str, Any]]:
    def target(name: str, value: str, ok: bool) -> dict[str, Any]:
        return {"target": name, "measured": value, "met": bool(ok)}

    return [
        target(
            "cost: gateway >= 20% of passthrough at 32 connections",
            f"{gw32.ratio:.1%}",
            (gw32.ratio or 0) >= 0.20,
        ),
        target(
            "cost: p50 added over direct at 1 connection <= 1 ms",
            f"{gw1.ratio:.3f} ms",
            (gw1.ratio if gw1.ratio is not None else math.inf) <= 1.0,
        ),
        target("in flight: >= 95% of 500/s", f"{g_in.ratio:.1%}", (g_in.ratio or 0) >= 0.95),
        target("in flight: zero errors", str(g_in.errors), g_in.errors == 0),
        target(
            "in flight: p99 <= 2.3 s", f"{(g_in.p99_ms or 0) / 1000:.3f} s", (g_in.p99_ms or math.inf) <= 2300
        ),
        target("large images: no error", str(g_big.errors + d_big.errors), g_big.errors == 0),
    ]


# -- machine and output ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for name in (
        "fastapi",
        "starlette",
        "uvicorn",
        "httpx",
        "aiohttp",
        "redis",
        "hiredis",
        "prometheus-client",
        "pydantic",
        "uvloop",
        "httptools",
        "orjson",
    ):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


COLUMNS = [
    "scenario",
    "conns",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "vs reference",
    "peak RSS MB",
    "sut CPU µs/req",
    "CPU % sut/up/redis/loadgen",
    "bg CPU %",
]


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        cpu = r["cpu_pct"]
        parts = [f"{cpu[k]:.0f}" if k in cpu else "-" for k in ("sut", "upstream", "redis")]
        parts.append(f"{r['loadgen_cpu_pct']:.0f}" if r["loadgen_cpu_pct"] is not None else "-")
        out.append(
            [
                f"{r['section']}: {r['scenario']}",
                str(r["connections"]),
                f"{r['rps']:.0f}" if r["rps"] is not None else "-",
                ms(r["p50_ms"]),
                ms(r["p99_ms"]),
                str(r["errors"]),
                r["ratio_text"],
                f"{r['rss_mb']:.0f}" if r["rss_mb"] is not None else "-",
                f"{r['sut_cpu_us_per_req']:.0f}" if r.get("sut_cpu_us_per_req") else "-",
                "/".join(parts),
                f"{r['background_cpu_pct']:.0f}" if r.get("background_cpu_pct") is not None else "-",
            ]
        )
    return out


def text_table(report: dict[str, Any]) -> str:
    rows = [COLUMNS] + table_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i in (0, 6) else cell.rjust(widths[i]) for i, cell in enumerate(row)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def header_lines(report: dict[str, Any]) -> list[str]:
    m, w = report["machine"], report["windows"]
    return [
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"Linux {m['kernel']}, commit {m['commit'] or '?'}, {m['date']}",
        f"arrangement: {report['arrangement']['cost, in flight, large images']} "
        f"(workers rows: {report['arrangement']['workers']})",
        f"load generator: {report['loadgen']}",
        f"windows: warm-up {w['warmup_s']:g} s, measured {w['duration_s']:g} s "
        f"({w['latency_duration_s']:g} s at 1 connection, {w['inflight_duration_s']:g} s in flight); "
        f"main figures best of {w['repeat']} runs taken in turns, variants best of {max(1, w['repeat'] - 1)}",
        "CPU %: of one CPU, over the measured window; bg = CPU used by anything else on the machine "
        "(other jobs, kernel, hypervisor steal) during that window",
    ]


def target_lines(report: dict[str, Any]) -> list[str]:
    return [f"[{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']}" for t in report["targets"]]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Command: `make bench` (`.venv/bin/python -m bench`), took {report['elapsed_s']:.0f} s.",
        "",
    ]
    lines += [f"- {line}" for line in header_lines(report)]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(report)]
    lines += ["", "Targets:", ""] + [f"- {line}" for line in target_lines(report)]
    notes = [
        f"- {r['section']}: {r['scenario']} ({r['connections']} conns): {r['note']}"
        for r in report["rows"]
        if r["note"]
    ]
    notes += [
        f"- {r['section']}: {r['scenario']} ({r['connections']} conns): repetitions "
        f"{', '.join(map(str, r['runs']))} ({'p50 ms' if r['connections'] == 1 else 'req/s'})"
        for r in report["rows"]
        if len(r.get("runs", [])) > 1
    ]
    if notes:
        lines += ["", "Notes:", ""] + notes
    return "\n".join(lines) + "\n"
