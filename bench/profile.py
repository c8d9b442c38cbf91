"""Profile the gateway under load with py-spy: where one worker's CPU goes.

    .venv/bin/python -m bench.profile                      # 32 connections, fixed answer (the cost figure)
    .venv/bin/python -m bench.profile --scenario inflight  # 1,000 connections, upstream takes 2 s
    .venv/bin/python -m bench.profile --scenario large     # 4 x 8 MB images, 50 connections
    .venv/bin/python -m bench --profile                    # the same as the first

Starts Redis, an upstream and one pinned gateway worker exactly as the benchmark does, drives the
load from a separate process, and runs ``py-spy record --pid <worker> --format raw`` for
``--seconds`` in the middle of it. Writes to bench/results/:

- ``profile-<scenario>[-native].txt``: the collapsed stacks (one line per stack and its sample count):
  feed it to flamegraph.pl / inferno, or read it;
- ``profile-<scenario>.svg``: a flame graph, from a second recording, with ``--svg``;
- ``profile-<scenario>.md``: the summary printed at the end: the top frames by own time, the
  top frames by total time, and own time by library (each sample charged to the first library
  found walking up from the leaf, skipping glue like asyncio, contextlib and typing).

py-spy must be installed (``.venv/bin/pip install py-spy``) and allowed to attach: root, or the
same user with ``kernel.yama.ptrace_scope`` 0 (the default of Debian's kernels is 1 only when the
Yama module is on; this is checked and reported).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import BODY, LARGE_BODY, arrangement, create_key, smoke
from bench.profile_summary import parse_collapsed, summarise, summary_markdown
from bench.report import RESULTS
from bench.stack import PYTHON, ROOT, Stack


def py_spy() -> str:
    candidates = [Path(PYTHON).parent / "py-spy", shutil.which("py-spy")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit("py-spy is not installed: run `.venv/bin/pip install py-spy` first")


def run(args: argparse.Namespace) -> int:
    spy = py_spy()
    arr = arrangement(not args.no_pin)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    stack = Stack(workdir)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    name = f"profile-{args.scenario}" + ("-native" if args.native else "")
    raw = out / f"{name}.txt"
    try:
        admin = "adm-" + secrets.token_hex(16)
        upstream_key = "up-" + secrets.token_hex(16)
        redis = stack.redis(arr.rest)
        if args.scenario == "cost":
            upstream = stack.fixed_upstream(arr.rest)
            connections, body, extra = 32, BODY, []
        elif args.scenario == "inflight":
            upstream = stack.simulator(arr.rest, 2.0, upstream_key)
            connections, body, extra = 1000, BODY, ["--stagger", "2", "--timeout", "15"]
        else:
            upstream = stack.simulator(arr.rest, 0.0, upstream_key)
            connections, body, extra = 50, LARGE_BODY, ["--timeout", "60"]
        gw = stack.gateway(
            arr.sut,
            redis_port=redis.port,
            upstream=f"http://127.0.0.1:{upstream.port}",
            upstream_key=upstream_key,
            admin_token=admin,
            workers=1,
            log_level=args.log_level,
            label="gateway",
        )
        key = create_key(gw.port, admin)
        if args.scenario == "cost":
            smoke(gw.port, key)
        warmup = 3.0 if args.scenario != "cost" else 1.5
        passes = 2 if args.svg else 1
        length = warmup + passes * (args.seconds + 1.5) + 1
        argv = [
            PYTHON,
            "-m",
            "bench.loadgen",
            "--port",
            str(gw.port),
            "--connections",
            str(connections),
            "--warmup",
            str(warmup),
            "--duration",
            str(length - warmup),
            "--deadline",
            str(length + 90),
            "--body",
            json.dumps(body),
            "--header",
            f"Authorization: Bearer {key}",
            *extra,
        ]

        def pin() -> None:
            os.setpgrp()
            if arr.rest:
                os.sched_setaffinity(0, arr.rest)

        load = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            preexec_fn=pin,
        )
        try:
            time.sleep(warmup + 0.5)
            worker = gw.pid  # one worker: `gateway serve` runs uvicorn in its own process
            record = [
                spy,
                "record",
                "--pid",
                str(worker),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                str(args.rate),
            ]
            if args.native:
                record.append("--native")
            print(
                f"py-spy: recording pid {worker} for {args.seconds:g} s ({args.scenario}, "
                f"{connections} connections)",
                file=sys.stderr,
                flush=True,
            )
            done = subprocess.run(
                [*record, "--format", "raw", "-o", str(raw)],
                capture_output=True,
                text=True,
                timeout=args.seconds + 60,
            )
            if done.returncode != 0 or not raw.exists():
                raise SystemExit(
                    f"py-spy failed (needs ptrace rights: root, or ptrace_scope 0):\n{done.stderr.strip()}"
                )
            if args.svg:
                svg = out / f"{name}.svg"
                subprocess.run(
                    [*record, "--format", "flamegraph", "-o", str(svg)],
                    capture_output=True,
                    timeout=args.seconds + 60,
                )
        finally:
            result_line = ""
            try:
                stdout, _ = load.communicate(timeout=length + 120)
                result_line = next((x for x in stdout.splitlines() if x.startswith("result ")), "")
            except subprocess.TimeoutExpired:
                load.kill()
                load.wait()
        result = json.loads(result_line[len("result ") :]) if result_line else {}
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarise(parse_collapsed(raw), args.top)
    title = (
        f"gateway profile: {args.scenario}, {connections} connections, "
        f"log level {args.log_level}, py-spy {args.rate} Hz for {args.seconds:g} s"
        + (", native frames" if args.native else "")
    )
    text = summary_markdown(summary, title)
    if result:
        text += (
            f"\nLoad during the run (profiler attached, so lower than the benchmark): "
            f"{result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, errors {result['errors']}.\n"
        )
    (out / f"{name}.md").write_text(text)
    print(text)
    print(f"written: {raw}, {out / f'{name}.md'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", choices=("cost", "inflight", "large"), default="cost")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long py-spy records")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (orjson, hiredis, GC...)")
    parser.add_argument("--svg", action="store_true", help="also record a flame graph (a second pass)")
    parser.add_argument("--log-level", choices=("warning", "info"), default="warning")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
