"""``python -m bench``: every benchmark figure, side by side, from one run.

See bench/README.md for what each scenario means. In short: load from a separate process against
`direct` (the upstream stand-in alone), `passthrough` (aiohttp server + aiohttp client, a few
lines: the ceiling of a Python proxy here) and the real `gateway` (key with a budget and an rpm
limit, metrics on), and ratios against the references measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.measure import (
    INFLIGHT_CONNECTIONS,
    LARGE_BODY,
    LARGE_CONNECTIONS,
    LARGE_FAULT,
    UPSTREAM_LATENCY_S,
    Arrangement,
    Bench,
    Row,
    best,
    by_cpu,
    create_key,
    interleaved,
    ms,
    ratio,
    say,
    smoke,
    wrk_row,
)
from bench.stack import DEFAULT_TRANSPORT, OTHER_TRANSPORT, ROOT, Proc, Stack, StackError

RESULTS = Path(__file__).resolve().parent / "results"


# -- the scenarios --------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    b = Bench(args, stack)
    pinned, floating = b.pinned, b.floating
    started = time.monotonic()
    admin = "adm-" + secrets.token_hex(16)
    upstream_key = "up-" + secrets.token_hex(16)
    rep, rep2 = args.repeat, max(1, args.repeat - 1)
    lat = {"duration": args.latency_duration, "connections": 1}

    say(f"arrangement: {pinned.text}")
    redis = stack.redis(pinned.rest)
    fixed = stack.fixed_upstream(pinned.rest)
    b.watch = {"upstream": fixed, "redis": redis}
    fixed_url = f"http://127.0.0.1:{fixed.port}"

    def gateway(cpus: frozenset[int] | None, label: str, upstream: str = fixed_url, **kw: Any) -> Proc:
        return stack.gateway(
            cpus,
            redis_port=redis.port,
            upstream=upstream,
            upstream_key=upstream_key,
            admin_token=admin,
            label=label,
            **kw,
        )

    if args.only_large:  # the 20 x 32 MB row alone, beside its direct baseline
        from bench import capacity

        capacity.large(b, stack, gateway, lambda port: create_key(port, admin), upstream_key)
        return report(b.rows, [], pinned, floating, args, started)

    if args.only_workers:  # the 1- and 2-worker rows alone
        from bench import workers

        workers.run(b, stack, gateway, None, redis, fixed, rep, lambda port: create_key(port, admin))
        return report(b.rows, [], pinned, floating, args, started)

    if args.only_burst:  # the 10,000-call burst alone, beside its direct baseline
        from bench import capacity

        capacity.burst(b, stack, gateway, lambda port: create_key(port, admin))
        return report(b.rows, [], pinned, floating, args, started)

    if args.only_capacity:  # the issue-13 scenarios alone (the LiteLLM row then has no ratio)
        from bench import capacity

        capacity.run(b, stack, gateway, lambda port: create_key(port, admin), upstream_key, 0.0)
        return report(b.rows, [], pinned, floating, args, started)

    # ---- cost: one worker, 32 connections and 1 connection, against the fixed answer.
    # The passthrough and the gateway run side by side (the idle one costs nothing), measured in
    # turns, so that a disturbance of the machine hits both alike.
    say("cost (fixed-answer upstream)")
    # The gateway with the other upstream transport runs beside it, in the same turns, so the
    # choice of the default (DEFAULT_TRANSPORT) is measured in every run.
    proxy = stack.passthrough(pinned.sut, fixed_url)
    gw = gateway(pinned.sut, "gateway")
    alt = gateway(pinned.sut, f"gateway-{OTHER_TRANSPORT}", transport=OTHER_TRANSPORT)
    key = create_key(gw.port, admin)
    auth = [f"Authorization: Bearer {key}"]
    smoke(gw.port, key)
    smoke(alt.port, key)
    on_rest = {"cpus": pinned.rest}
    direct32 = b.add("direct", "cost", b.load(fixed.port, connections=32, sut=None, **on_rest), rss=False)
    res = interleaved(
        b,
        {
            "pass32": dict(port=proxy.port, connections=32, sut=proxy, **on_rest),
            "gw32": dict(port=gw.port, connections=32, sut=gw, headers=auth, **on_rest),
            "alt32": dict(port=alt.port, connections=32, sut=alt, headers=auth, **on_rest),
        },
        rep,
    )
    pass32 = b.add("passthrough", "cost", res["pass32"])
    gw32 = b.add("gateway", "cost", res["gw32"])
    alt32 = b.add(f"gateway, transport={OTHER_TRANSPORT}", "cost", res["alt32"])
    res = interleaved(
        b,
        {
            "direct1": dict(port=fixed.port, sut=None, **lat, **on_rest),
            "pass1": dict(port=proxy.port, sut=proxy, **lat, **on_rest),
            "gw1": dict(port=gw.port, sut=gw, headers=auth, **lat, **on_rest),
            "alt1": dict(port=alt.port, sut=alt, headers=auth, **lat, **on_rest),
        },
        rep,
    )
    direct1 = b.add("direct", "cost", res["direct1"], rss=False)
    pass1 = b.add("passthrough", "cost", res["pass1"])
    gw1 = b.add("gateway", "cost", res["gw1"])
    alt1 = b.add(f"gateway, transport={OTHER_TRANSPORT}", "cost", res["alt1"])
    wrk_rows: list[Row] = []
    if b.args.wrk:
        wrk_rows.append(wrk_row(b, "passthrough (wrk)", proxy, pinned))
        wrk_rows.append(wrk_row(b, "gateway (wrk)", gw, pinned, auth))
    stack.stop(proxy)
    stack.stop(gw)
    stack.stop(alt)
    if args.only_cost:  # the cost rows alone: a quick before/after check of a change
        for row in (gw32, alt32):
            of_pass = f"{row.rps / pass32.rps:.1%} of passthrough"
            ratio(row, row.rps / pass32.rps, "passthrough", of_pass + by_cpu(row, pass32))
        alt32.ratio_text += f"; {alt32.rps / gw32.rps:.2f}x the default transport ({DEFAULT_TRANSPORT})"
        for row in (pass1, gw1, alt1):
            added = row.p50_ms - direct1.p50_ms  # type: ignore[operator]
            ratio(row, added, "direct", f"p50 +{added:.3f} ms over direct")
        return report(b.rows, [], pinned, floating, args, started)

    gw = gateway(pinned.sut, "gateway-httpx", transport="httpx")
    httpx32 = b.add(
        "gateway, transport=httpx",
        "cost",
        best([b.load(gw.port, connections=32, sut=gw, headers=auth, **on_rest) for _ in range(rep2)], False),
    )
    stack.stop(gw)

    gw = gateway(pinned.sut, "gateway-info", log_level="info")
    res = interleaved(
        b,
        {
            "info32": dict(port=gw.port, connections=32, sut=gw, headers=auth, **on_rest),
            "info1": dict(port=gw.port, sut=gw, headers=auth, **lat, **on_rest),
        },
        rep2,
    )
    info32 = b.add("gateway, log level info", "cost", res["info32"])
    info1 = b.add("gateway, log level info", "cost", res["info1"])
    stack.stop(gw)

    ratio(
        direct32,
        direct32.rps / pass32.rps,
        "passthrough",
        f"{direct32.rps / pass32.rps:.1f}x passthrough: upstream + load generator are not the bottleneck",
    )
    ratio(pass32, pass32.rps / direct32.rps, "direct", f"{pass32.rps / direct32.rps:.2f}x direct")
    for row in (gw32, alt32, httpx32, info32):
        of_pass = f"{row.rps / pass32.rps:.1%} of passthrough"
        ratio(row, row.rps / pass32.rps, "passthrough", of_pass + by_cpu(row, pass32))
    for row in (alt32, httpx32):
        row.ratio_text += f"; {row.rps / gw32.rps:.2f}x the default transport ({DEFAULT_TRANSPORT})"
    info32.ratio_text += f"; {info32.rps / gw32.rps:.2f}x log level warning"
    ratio(direct1, None, "", "baseline for added latency")
    for row in (pass1, gw1, alt1, info1):
        added = row.p50_ms - direct1.p50_ms  # type: ignore[operator]
        ratio(row, added, "direct", f"p50 +{added:.3f} ms over direct")

    # ---- workers: 1 vs 2, nothing pinned (two workers need both cores)
    from bench import workers

    workers.run(b, stack, gateway, auth, redis, fixed, rep2)
    stack.stop(fixed)

    # ---- in flight: 1,000 connections, upstream takes 2 s
    say(f"in flight ({INFLIGHT_CONNECTIONS} connections, upstream latency {UPSTREAM_LATENCY_S:g} s)")
    sim = stack.simulator(pinned.rest, UPSTREAM_LATENCY_S, upstream_key)
    b.watch = {"upstream": sim, "redis": redis}
    sim_auth = [f"Authorization: Bearer {upstream_key}"]
    steady = dict(
        connections=INFLIGHT_CONNECTIONS,
        warmup=UPSTREAM_LATENCY_S + 0.5,
        duration=args.inflight_duration,
        stagger=UPSTREAM_LATENCY_S,
        timeout=15.0,
        **on_rest,
    )
    ideal = INFLIGHT_CONNECTIONS / UPSTREAM_LATENCY_S
    d_in = b.add(
        "direct (simulator)", "in flight", b.load(sim.port, sut=None, headers=sim_auth, **steady), rss=False
    )
    gw = gateway(pinned.sut, "gateway-inflight", upstream=f"http://127.0.0.1:{sim.port}")
    g_in = b.add(
        "gateway",
        "in flight",
        b.load(gw.port, sut=gw, headers=auth, **steady),
        note="steady state: the 1,000 connections start spread over 2 s, then each sends its "
        "next request as soon as it has the answer; counted over the window after warm-up",
    )
    g_burst = b.add(
        "gateway, burst (all at once, 1 round)",
        "in flight",
        b.load(
            gw.port, connections=INFLIGHT_CONNECTIONS, rounds=1, sut=gw, headers=auth, timeout=15.0, **on_rest
        ),
        note="1,000 new connections each send one request in the same instant; "
        "throughput = 1,000 / time to the last answer",
    )
    stack.stop(gw)
    stack.stop(sim)
    for row in (d_in, g_in, g_burst):
        ratio(row, row.rps / ideal, "ideal", f"{row.rps / ideal:.1%} of ideal {ideal:.0f}/s")

    # ---- large images: 4 x 8 MB base64 per answer, 50 connections
    say(f"large images ({LARGE_FAULT}, {LARGE_CONNECTIONS} connections)")
    sim0 = stack.simulator(pinned.rest, 0.0, upstream_key)
    b.watch = {"upstream": sim0, "redis": redis}
    big = dict(
        connections=LARGE_CONNECTIONS, rounds=args.large_rounds, body=LARGE_BODY, timeout=90.0, **on_rest
    )
    one = dict(connections=1, rounds=5, body=LARGE_BODY, timeout=60.0, **on_rest)
    d_big = b.add(
        "direct (simulator), large",
        "large images",
        b.load(sim0.port, sut=None, headers=sim_auth, **big),
        rss=False,
    )
    d_big1 = b.add(
        "direct (simulator), large",
        "large images",
        b.load(sim0.port, sut=None, headers=sim_auth, **one),
        rss=False,
    )
    gw = gateway(pinned.sut, "gateway-large", upstream=f"http://127.0.0.1:{sim0.port}")
    idle_rss = gw.rss_mb()
    g_big = b.add(
        "gateway, large",
        "large images",
        b.load(gw.port, sut=gw, headers=auth, **big),
        note=f"all 50 requests at once; gateway RSS before: {idle_rss:.0f} MB",
    )
    g_big1 = b.add(
        "gateway, large",
        "large images",
        b.load(gw.port, sut=gw, headers=auth, **one),
        note="one connection, 5 requests one after the other: the added latency of one answer",
    )
    stack.stop(gw)
    stack.stop(sim0)
    for row, ref in ((g_big, d_big), (g_big1, d_big1)):
        added = row.p50_ms - ref.p50_ms  # type: ignore[operator]
        ratio(row, added, "direct", f"p50 +{added:.0f} ms over direct")
    for row in (d_big, d_big1):
        ratio(row, None, "", f"{row.mean_response_bytes / 1e6:.1f} MB per answer")

    # ---- issue 13: the burst, 20 large answers at once, and the LiteLLM proxy
    from bench import capacity

    capacity.run(b, stack, gateway, lambda port: create_key(port, admin), upstream_key, gw32.rps or 0.0)

    targets = check_targets(gw32, gw1, g_in, g_big, d_big)
    return report(b.rows + wrk_rows, targets, pinned, floating, args, started)


def report(
    rows: list[Row],
    targets: list[dict[str, Any]],
    pinned: Arrangement,
    floating: Arrangement,
    args: argparse.Namespace,
    started: float,
) -> dict[str, Any]:
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
        "httpx-aiohttp",
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per throughput run")
    parser.add_argument(
        "--latency-duration", type=float, default=3.0, help="measured seconds per 1-connection run"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of the main figures, in turns, best kept (variants: one fewer)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each window")
    parser.add_argument(
        "--inflight-duration", type=float, default=6.0, help="measured seconds, in-flight figure"
    )
    parser.add_argument("--large-rounds", type=int, default=1, help="requests per connection, large images")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--wrk",
        dest="wrk",
        action="store_true",
        default=None,
        help="add wrk cross-check rows (default: when wrk is on PATH)",
    )
    parser.add_argument("--no-wrk", dest="wrk", action="store_false")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark, profile the gateway with py-spy; the other "
        "options are then bench.profile's (python -m bench.profile --help)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json and latest.md go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--only-capacity", action="store_true", help="only the burst, large-answer and LiteLLM rows"
    )
    parser.add_argument(
        "--only-cost",
        action="store_true",
        help="only the 32- and 1-connection cost rows (direct, passthrough, gateway)",
    )
    parser.add_argument(
        "--only-workers", action="store_true", help="only the 1- and 2-worker rows (32 connections)"
    )
    parser.add_argument(
        "--only-burst", action="store_true", help="only the 10,000-call burst row and its direct"
    )
    parser.add_argument(
        "--only-large", action="store_true", help="only the 20 x 32 MB large-answer row and its direct"
    )
    parser.add_argument(
        "--only-reports",
        action="store_true",
        help="only the spend reports over 10,000 keys (bench/reports.py; a full run ends with it)",
    )
    args = parser.parse_args(argv)
    if args.wrk is None:
        args.wrk = shutil.which("wrk") is not None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--profile" in argv:  # python -m bench --profile [bench.profile's options]
        from bench import profile

        return profile.main([a for a in argv if a != "--profile"])
    args = parse_args(argv)
    if args.only_reports:
        return _spend_reports(args)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    stack = Stack(workdir)
    began = time.monotonic()
    try:
        report = run_all(args, stack)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except StackError as exc:
        say(f"bench: {exc}")
        return 2
    finally:
        stack.close()
        if args.keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["elapsed_s"] = round(time.monotonic() - began, 1)
    print()
    print("\n".join(header_lines(report)))
    print()
    print(text_table(report))
    print()
    print("\n".join(target_lines(report)))
    print(f"\ntook {report['elapsed_s']:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    print(f"written: {args.out / 'latest.json'}, {args.out / 'latest.md'}")
    if not any((args.only_capacity, args.only_cost, args.only_workers, args.only_burst, args.only_large)):
        _spend_reports(args)  # a full run: issue 14's report scenario too
    return 1 if args.strict and not all(t["met"] for t in report["targets"]) else 0


def _spend_reports(args: argparse.Namespace) -> int:
    """A year's spend report over 10,000 keys, by team, model, day and key (bench/reports.py)."""
    from bench import reports

    say("spend reports (10,000 keys, 100 teams, a year of rollups)")
    return reports.main(["--out", str(args.out)])
