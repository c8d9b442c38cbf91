"""The workers rows: ``GATEWAY_WORKERS=1`` and ``=2`` side by side, 32 keep-alive connections.

Nothing is pinned (two workers need both CPUs, and share them with the load generator, the
upstream stand-in and Redis: on a 2-CPU machine 2x is out of reach). The two gateways run at the
same time (the idle one costs nothing) and are measured in turns, best of ``repeat`` each. The
note gives the CPU of each worker: with uvicorn's shared socket, 32 connections opened together
often all landed on one of them; with a socket per worker (gateway/cli/workers.py) the kernel
spreads them. ``python -m bench --only-workers`` runs these rows alone (about a minute).
"""

from __future__ import annotations

from typing import Any

from bench.stack import Proc, Stack

TARGET = 1.6  # issue 13: 2 workers >= 1.6x one, on this machine with the load generator on it


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
    """Add the two rows to ``b`` (a bench.run.Bench); Redis and the upstream float while they run.

    ``auth`` is the bench key's header, or None to create the key with ``make_key(port)``.
    """
    from bench.run import interleaved, ratio, repin, say

    pinned, floating = b.pinned, b.floating
    say("workers (nothing pinned)")
    for proc in (redis, fixed):
        repin(proc, floating.rest)
    g1 = gateway(floating.sut, "gateway-w1")
    g2 = gateway(floating.sut, "gateway-w2", workers=2)
    if auth is None:
        auth = [f"Authorization: Bearer {make_key(g1.port)}"]
    spec = dict(connections=32, headers=auth, cpus=floating.rest)
    res = interleaved(
        b,
        {"w1": dict(port=g1.port, sut=g1, **spec), "w2": dict(port=g2.port, sut=g2, **spec)},
        repeat,
    )
    w1 = b.add("gateway, 1 worker, unpinned", "workers", res["w1"])
    split = sorted(res["w2"].get("sut_cpu_pct_per_process", {}).values(), reverse=True)[:2]
    uneven = len(split) == 2 and split[1] < 0.2 * split[0]
    w2 = b.add(
        "gateway, 2 workers, unpinned",
        "workers",
        res["w2"],
        note="CPU % of the two busiest gateway processes (the workers): "
        + " / ".join(f"{v:.0f}" for v in split)
        + (": one worker got (nearly) all 32 connections" if uneven else ""),
    )
    stack.stop(g1)
    stack.stop(g2)
    for proc in (redis, fixed):
        repin(proc, pinned.rest)
    ratio(w1, 1.0, "1 worker", "reference")
    if w1.rps:
        value = w2.rps / w1.rps
        ratio(w2, value, "1 worker", f"{value:.2f}x 1 worker (target >= {TARGET}x)")
