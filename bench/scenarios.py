"""The scenarios of ``python -m bench``: what runs, in which order, beside which reference.

The cost section runs the passthrough and the gateways side by side and measures them in turns, so
that a disturbance of the machine hits all alike; the in-flight and large-image sections follow,
then the workers (bench/workers.py) and the capacity rows (bench/capacity.py). The load
itself is driven by bench/measure.py; the report is shaped by bench/report.py.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

from bench import capacity, workers
from bench.measure import (
    INFLIGHT_CONNECTIONS,
    LARGE_BODY,
    LARGE_CONNECTIONS,
    LARGE_FAULT,
    UPSTREAM_LATENCY_S,
    Bench,
    Row,
    by_cpu,
    create_key,
    interleaved,
    ratio,
    say,
    smoke,
    wrk_row,
)
from bench.report import build_report, check_targets
from bench.stack import Proc, Stack


def run_all(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    """Every scenario the options ask for, in order, each beside its reference; the report."""
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
        capacity.large(b, stack, gateway, lambda port: create_key(port, admin), upstream_key)
        return build_report(b.rows, [], pinned, floating, args, started)

    if args.only_workers:  # the 1- and 2-worker rows alone
        workers.run(b, stack, gateway, None, redis, fixed, rep, lambda port: create_key(port, admin))
        return build_report(b.rows, [], pinned, floating, args, started)

    if args.only_burst:  # the 10,000-call burst alone, beside its direct baseline
        capacity.burst(b, stack, gateway, lambda port: create_key(port, admin))
        return build_report(b.rows, [], pinned, floating, args, started)

    if args.only_capacity:  # the capacity scenarios alone (the LiteLLM row then has no ratio)
        capacity.run(b, stack, gateway, lambda port: create_key(port, admin), upstream_key, 0.0)
        return build_report(b.rows, [], pinned, floating, args, started)

    # ---- cost: one worker, 32 connections and 1 connection, against the fixed answer.
    # The passthrough and the gateway run side by side (the idle one costs nothing), measured in
    # turns, so that a disturbance of the machine hits both alike.
    say("cost (fixed-answer upstream)")
    # A gateway at log level info (the default level) runs beside it, in the same turns: its
    # ratio measured in a later window was mostly noise.
    proxy = stack.passthrough(pinned.sut, fixed_url)
    gw = gateway(pinned.sut, "gateway")
    info = gateway(pinned.sut, "gateway-info", log_level="info")
    key = create_key(gw.port, admin)
    auth = [f"Authorization: Bearer {key}"]
    smoke(gw.port, key)
    smoke(info.port, key)
    on_rest = {"cpus": pinned.rest}
    direct32 = b.add("direct", "cost", b.load(fixed.port, connections=32, sut=None, **on_rest), rss=False)
    res = interleaved(
        b,
        {
            "pass32": dict(port=proxy.port, connections=32, sut=proxy, **on_rest),
            "gw32": dict(port=gw.port, connections=32, sut=gw, headers=auth, **on_rest),
            "info32": dict(port=info.port, connections=32, sut=info, headers=auth, **on_rest),
        },
        rep,
    )
    pass32 = b.add("passthrough", "cost", res["pass32"])
    gw32 = b.add("gateway", "cost", res["gw32"])
    info32 = b.add("gateway, log level info", "cost", res["info32"])
    res = interleaved(
        b,
        {
            "direct1": dict(port=fixed.port, sut=None, **lat, **on_rest),
            "pass1": dict(port=proxy.port, sut=proxy, **lat, **on_rest),
            "gw1": dict(port=gw.port, sut=gw, headers=auth, **lat, **on_rest),
            "info1": dict(port=info.port, sut=info, headers=auth, **lat, **on_rest),
        },
        rep,
    )
    direct1 = b.add("direct", "cost", res["direct1"], rss=False)
    pass1 = b.add("passthrough", "cost", res["pass1"])
    gw1 = b.add("gateway", "cost", res["gw1"])
    info1 = b.add("gateway, log level info", "cost", res["info1"])
    wrk_rows: list[Row] = []
    if b.args.wrk:
        wrk_rows.append(wrk_row(b, "passthrough (wrk)", proxy, pinned))
        wrk_rows.append(wrk_row(b, "gateway (wrk)", gw, pinned, auth))
    stack.stop(proxy)
    stack.stop(gw)
    stack.stop(info)
    if args.only_cost:  # the cost rows alone: a quick before/after check of a change
        for row in (gw32, info32):
            of_pass = f"{row.rps / pass32.rps:.1%} of passthrough"
            ratio(row, row.rps / pass32.rps, "passthrough", of_pass + by_cpu(row, pass32))
        info32.ratio_text += f"; {info32.rps / gw32.rps:.2f}x log level warning"
        for row in (pass1, gw1, info1):
            added = row.p50_ms - direct1.p50_ms  # type: ignore[operator]
            ratio(row, added, "direct", f"p50 +{added:.3f} ms over direct")
        return build_report(b.rows, [], pinned, floating, args, started)

    ratio(
        direct32,
        direct32.rps / pass32.rps,
        "passthrough",
        f"{direct32.rps / pass32.rps:.1f}x passthrough: upstream + load generator are not the bottleneck",
    )
    ratio(pass32, pass32.rps / direct32.rps, "direct", f"{pass32.rps / direct32.rps:.2f}x direct")
    for row in (gw32, info32):
        of_pass = f"{row.rps / pass32.rps:.1%} of passthrough"
        ratio(row, row.rps / pass32.rps, "passthrough", of_pass + by_cpu(row, pass32))
    info32.ratio_text += f"; {info32.rps / gw32.rps:.2f}x log level warning"
    ratio(direct1, None, "", "baseline for added latency")
    for row in (pass1, gw1, info1):
        added = row.p50_ms - direct1.p50_ms  # type: ignore[operator]
        ratio(row, added, "direct", f"p50 +{added:.3f} ms over direct")

    # ---- workers: 1 vs 2, nothing pinned (two workers need both cores)

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

    # ---- capacity: the burst, 20 large answers at once, and the LiteLLM proxy

    capacity.run(b, stack, gateway, lambda port: create_key(port, admin), upstream_key, gw32.rps or 0.0)

    targets = check_targets(gw32, gw1, g_in, g_big, d_big)
    return build_report(b.rows + wrk_rows, targets, pinned, floating, args, started)
