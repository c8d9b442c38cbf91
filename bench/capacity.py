"""The capacity scenarios, each beside its direct baseline measured in the same run.

- burst: 10,000 calls arriving at once on one worker, upstream 20 s (``GATEWAY_MAX_INFLIGHT``
  10,000): statuses, p99 and the peak RSS of the gateway's process tree, beside the same burst
  sent straight to the upstream (ratio of the p99s);
- large answers: 20 answers of 32 MB base64 at once: wall time and peak RSS, beside direct;
- LiteLLM: the LiteLLM 1.80.0 proxy at 32 connections against the fixed-answer upstream, routing
  one model to it with only its master key: the gateway's 32-connection throughput as a multiple
  of it. LiteLLM is installed on first use in its own venv (``.bench/litellm-venv``), never as a
  dependency of the project.
"""

from __future__ import annotations

import json
import resource
import secrets
import subprocess
from pathlib import Path
from typing import Any

from bench.measure import BODY, LARGE_BODY, ratio, say
from bench.stack import ROOT, Proc, Stack, _http_status, free_port, wait_until

BURST_CALLS = 10_000
BURST_UPSTREAM_S = 20.0
LARGE_CALLS = 20
LITELLM_VERSION = "1.80.0"
LITELLM_VENV = ROOT / ".bench" / "litellm-venv"
LITELLM_MODEL = "bench-image"


def burst_load(calls: int, cpus: frozenset[int] | None) -> dict[str, Any]:
    """``calls`` fresh connections, one request each, all sent in the same instant."""
    return dict(connections=calls, rounds=1, timeout=120.0, cpus=cpus)


def statuses_text(result: dict[str, Any]) -> str:
    parts = [f"{count:,} x {status}" for status, count in sorted(result.get("statuses", {}).items())]
    other = {k: v for k, v in result.get("error_kinds", {}).items() if not k.startswith("status ")}
    parts += [f"{count:,} x {kind}" for kind, count in other.items()]
    return ", ".join(parts) or "none answered"


def descriptor_shortfall(calls: int) -> str:
    """A note when this host's hard open-file limit (inherited by the gateway, which can raise its
    soft limit only up to it without CAP_SYS_RESOURCE) cannot hold ``calls`` calls at once: each
    holds two sockets, plus the worker's own files. The calls beyond it wait for a descriptor."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    need = 2 * calls + 1024
    if hard == resource.RLIM_INFINITY or hard >= need:
        return ""
    return (
        f"; hard open-file limit {hard:,} < {need:,} needed: not every call can hold its upstream "
        "connection at once, the rest wait for a descriptor"
    )


def ensure_litellm() -> Path:
    """The ``litellm`` command of a venv of its own, created (and LiteLLM installed) on first use."""
    command = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / f".installed-{LITELLM_VERSION}"
    if marker.exists() and command.exists():
        return command
    subprocess.run(["python3", "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
    pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"]
    subprocess.run(pip, check=True, timeout=1800)
    marker.touch()
    return command


def start_litellm(
    stack: Stack, cpus: frozenset[int] | None, upstream_port: int, upstream_key: str
) -> tuple[Proc, str]:
    """A LiteLLM proxy routing one image model to the upstream; returns it and its master key."""
    command = ensure_litellm()
    master = "sk-bench-" + secrets.token_hex(8)
    config = stack.workdir / "litellm.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "model_list": [
                    {
                        "model_name": LITELLM_MODEL,
                        "litellm_params": {
                            "model": "openai/" + LITELLM_MODEL,
                            "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                            "api_key": upstream_key,
                        },
                    }
                ],
                "general_settings": {"master_key": master},
                "litellm_settings": {"telemetry": False},
            }
        )
    )
    port = free_port()
    argv = [
        str(command),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"}
    proc = stack.spawn("litellm", argv, port, cpus, env)
    wait_until(lambda: _http_status(port, "/health/liveliness") == 200, proc, 180, "LiteLLM proxy")
    return proc, master


def run(b: Any, stack: Stack, gateway: Any, make_key: Any, upstream_key: str, gw32_rps: float) -> None:
    """Add the burst, large-answer and LiteLLM rows to ``b`` (a bench.measure.Bench).

    ``gateway(cpus, label, upstream=..., extra_env=...)`` starts a gateway, ``make_key(port)``
    creates the bench key on it, ``gw32_rps`` is the gateway's 32-connection figure of this run.
    """
    burst(b, stack, gateway, make_key)
    large(b, stack, gateway, make_key, upstream_key)

    pinned = b.pinned
    say("LiteLLM 1.80.0 proxy (32 connections, fixed-answer upstream)")
    fixed = stack.fixed_upstream(pinned.rest)
    b.watch = {**b.watch, "upstream": fixed}
    try:
        proxy, master = start_litellm(stack, pinned.sut, fixed.port, upstream_key)
    except Exception as exc:  # noqa: BLE001 - the rest of the report stands without this row
        say(f"  LiteLLM could not be started, row left out: {exc}")
        stack.stop(fixed)
        return
    body = {**BODY, "model": LITELLM_MODEL}
    spec = dict(connections=32, body=body, headers=[f"Authorization: Bearer {master}"], cpus=pinned.rest)
    lite = b.add("LiteLLM 1.80.0 proxy", "cost", b.load(proxy.port, sut=proxy, **spec))
    stack.stop(proxy)
    stack.stop(fixed)
    if lite.rps:
        ratio(lite, gw32_rps / lite.rps, "gateway", f"the gateway does {gw32_rps / lite.rps:.1f}x this")


def burst(b: Any, stack: Stack, gateway: Any, make_key: Any) -> None:
    """The burst row: 10,000 calls at once on one worker, upstream 20 s, beside the same burst direct.

    Runs alone with ``python -m bench --only-burst`` (about a minute and a half).
    """
    pinned = b.pinned
    say(f"burst ({BURST_CALLS:,} calls at once, upstream {BURST_UPSTREAM_S:g} s)")
    slow = stack.fixed_upstream(pinned.rest, delay=BURST_UPSTREAM_S)
    b.watch = {**b.watch, "upstream": slow}
    load = burst_load(BURST_CALLS, pinned.rest)
    result = b.load(slow.port, sut=None, **load)
    direct = b.add(
        "direct (fixed, 20 s)", "burst", result, rss=False, note=f"statuses: {statuses_text(result)}"
    )
    gw = gateway(
        pinned.sut,
        "gateway-burst",
        upstream=f"http://127.0.0.1:{slow.port}",
        extra_env={"GATEWAY_MAX_INFLIGHT": str(BURST_CALLS)},
    )
    key = make_key(gw.port)
    result = b.load(gw.port, sut=gw, headers=[f"Authorization: Bearer {key}"], **load)
    row = b.add(
        "gateway (fixed, 20 s)",
        "burst",
        result,
        note=f"statuses: {statuses_text(result)}{descriptor_shortfall(BURST_CALLS)}",
    )
    stack.stop(gw)
    stack.stop(slow)
    if row.p99_ms and direct.p99_ms:
        ratio(row, row.p99_ms / direct.p99_ms, "direct", f"p99 {row.p99_ms / direct.p99_ms:.2f}x direct")
    ratio(direct, None, "", f"{BURST_CALLS:,} calls at once")


def large(b: Any, stack: Stack, gateway: Any, make_key: Any, upstream_key: str) -> None:
    """The large-answer row: 20 answers of 32 MB base64 at once, beside the same burst direct.

    Runs alone with ``python -m bench --only-large`` (a minute, not the whole capacity run).
    """
    pinned = b.pinned
    say(f"large answers ({LARGE_CALLS} x 32 MB base64 at once)")
    sim0 = stack.simulator(pinned.rest, 0.0, upstream_key)
    b.watch = {**b.watch, "upstream": sim0}
    big = dict(connections=LARGE_CALLS, rounds=1, body=LARGE_BODY, timeout=120.0, cpus=pinned.rest)
    sim_auth = [f"Authorization: Bearer {upstream_key}"]
    d_big = b.add(
        "direct (simulator), 20 x 32 MB",
        "large",
        b.load(sim0.port, sut=None, headers=sim_auth, **big),
        rss=False,
    )
    sim_url = f"http://127.0.0.1:{sim0.port}"
    gw = gateway(pinned.sut, "gateway-large20", upstream=sim_url)
    key = make_key(gw.port)
    g_big = b.add(
        "gateway, 20 x 32 MB",
        "large",
        b.load(gw.port, sut=gw, headers=[f"Authorization: Bearer {key}"], **big),
    )
    stack.stop(gw)
    stack.stop(sim0)
    ratio(d_big, None, "", f"wall {d_big.requests / d_big.rps:.2f} s" if d_big.rps else "")
    if g_big.rps and d_big.rps:
        wall_ratio = d_big.rps / g_big.rps  # same count of answers: wall ratio = inverse rps ratio
        wall = f"wall {g_big.requests / g_big.rps:.2f} s = {wall_ratio:.2f}x direct"
        ratio(g_big, wall_ratio, "direct", wall)
