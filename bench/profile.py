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
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.measure import BODY, LARGE_BODY, arrangement, create_key, smoke
from bench.report import RESULTS
from bench.stack import DEFAULT_TRANSPORT, PYTHON, ROOT, Stack

# Each sample is charged to the first frame, walking up from the leaf, whose file (as py-spy shortens
# it: the package-relative path) starts with one of these.
CATEGORIES: list[tuple[str, str]] = [
    ("fastapi/", "FastAPI (routing, dependencies, params)"),
    ("starlette/", "Starlette (routing, requests, responses)"),
    ("uvicorn/", "uvicorn (HTTP server protocol)"),
    ("pydantic", "pydantic"),
    ("redis/", "redis-py (client, pool, parser)"),
    ("hiredis", "redis-py (client, pool, parser)"),
    ("httpx_aiohttp/", "httpx-aiohttp (transport)"),
    ("httpx/", "httpx (client, models)"),
    ("httpcore/", "httpx (client, models)"),
    ("aiohttp/", "aiohttp (upstream client)"),
    ("multidict", "aiohttp (upstream client)"),
    ("yarl/", "aiohttp (upstream client)"),
    ("prometheus_client/", "prometheus_client"),
    ("logging/", "logging"),
    ("orjson", "JSON (orjson, json)"),
    ("json/", "JSON (orjson, json)"),
    ("anyio/", "anyio"),
    ("gateway/http1/", "gateway/http1 (upstream transport)"),
    ("gateway/", "gateway's own code"),
    ("uvloop", "event loop (uvloop, asyncio)"),
]
# Glue: skipped when walking up, so its time goes to whoever called it.
GLUE = (
    "asyncio/",
    "contextlib.py",
    "typing.py",
    "abc.py",
    "functools.py",
    "enum.py",
    "dataclasses.py",
    "inspect.py",
    "_weakrefset.py",
    "weakref.py",
    "copy.py",
    "re/__init__.py",
    "re.py",
    "collections/",
    "threading.py",
    "<frozen",
    "secrets.py",
    "random.py",
    "hashlib.py",
    "hmac.py",
    "base64.py",
    "datetime.py",
    "urllib/",
    "http/",
    "email/",
    "encodings/",
    "socket.py",
    "ssl.py",
    "selectors.py",
    "typing_extensions.py",
)
FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # py-spy puts "process NNN:..." and "thread (0x...)" pseudo-frames on top with some options
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        stacks.append((frames, int(count)))
    return stacks


def frame_key(frame: str) -> str:
    """``func (file:line)`` -> ``func (file)``: a function, whatever line it was on."""
    match = FRAME_RE.match(frame)
    if match is None:
        return frame
    return f"{match['func']} ({match['file']})"


def frame_file(frame: str) -> str:
    match = FRAME_RE.match(frame)
    return match["file"] if match else frame


SYSCALLS = frozenset(
    {
        "write",
        "writev",
        "read",
        "readv",
        "send",
        "sendmsg",
        "sendto",
        "recv",
        "recvmsg",
        "recvfrom",
        "epoll_wait",
        "epoll_ctl",
        "__libc_write",
        "__libc_read",
        "__write",
        "__read",
        "accept4",
        "connect",
        "close",
        "shutdown",
        "getpid",
        "clock_gettime",
    }
)
NATIVE_LIBS: list[tuple[str, str]] = [
    ("orjson", "JSON (orjson, json)"),
    ("hiredis", "redis-py (client, pool, parser)"),
    ("pydantic_core", "pydantic"),
    ("_multidict", "aiohttp (upstream client)"),
    ("multidict", "aiohttp (upstream client)"),
    ("_http_parser", "aiohttp (upstream client)"),
    ("_http_writer", "aiohttp (upstream client)"),
    ("yarl", "aiohttp (upstream client)"),
    ("httptools", "httptools (uvicorn's and gateway/http1's HTTP parser)"),
    ("uvloop", "event loop (uvloop, asyncio)"),
    ("loop.c", "event loop (uvloop, asyncio)"),
    ("core.c", "event loop (uvloop, asyncio)"),
    ("stream.c", "event loop (uvloop, asyncio)"),
    ("_asynciomodule", "event loop (uvloop, asyncio)"),
]


def _is_python(file: str) -> bool:
    return file.endswith(".py") or file.startswith("<")


def category(frames: list[str]) -> str:
    """The library a sample's own time belongs to (see CATEGORIES, GLUE); native frames too."""
    parsed = [(m["func"], m["file"]) if (m := FRAME_RE.match(f)) else (f, "") for f in frames]
    if any(func.startswith(("gc_collect", "collect_with_callback")) for func, _ in parsed):
        return "garbage collector (gc)"
    native_leaf = True
    for func, file in reversed(parsed):
        if file in ("[vdso]", "?") or func.startswith("0x"):
            continue
        if not _is_python(file):
            if native_leaf and func in SYSCALLS:
                return "syscalls (socket I/O, clock, getpid)"
            for needle, name in NATIVE_LIBS:
                if needle in file:
                    return name
            native_leaf = False
            continue  # the interpreter itself: charge the Python code that runs it
        native_leaf = False
        if file.startswith(GLUE):
            continue
        for prefix, name in CATEGORIES:
            if file.startswith(prefix):
                return name
        return "other Python: " + file.rsplit("/", 1)[-1]
    return "event loop (uvloop, asyncio)"


def summarise(stacks: list[tuple[list[str], int]], top: int = 10) -> dict[str, object]:
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    gateway_inclusive: Counter[str] = Counter()
    in_route = 0
    for frames, count in stacks:
        if not frames:
            continue
        keys = {frame_key(f) for f in frames}
        for key in keys:
            if "(gateway/" in key and "(gateway/cli/" not in key and "(gateway/__main__.py)" not in key:
                gateway_inclusive[key] += count
        if any("(gateway/routes/" in k for k in keys):
            in_route += count
        own[frame_key(frames[-1])] += count
        for key in {frame_key(f) for f in frames}:
            inclusive[key] += count
        by_category[category(frames)] += count

    def pct(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "own": pct(own, top),
        "inclusive": pct(Counter({k: v for k, v in inclusive.items() if not _is_root(k)}), 40),
        "categories": pct(by_category, 30),
        "gateway": pct(gateway_inclusive, 25),
        "in_route_pct": round(100 * in_route / total, 1),
    }


def _is_root(key: str) -> bool:
    """Frames every sample goes through (the event loop's own): no information in their total."""
    return any(
        s in key
        for s in (
            "<module>",
            "run (asyncio/runners.py)",
            "run_until_complete",
            "run_forever",
            "_run_once",
            "(gateway/cli/",  # main, serve_command, _run_uvicorn: the package gateway/cli/
            "serve_command",
            "_run_uvicorn",
            "run (uvicorn/",
            "_serve (uvicorn/",
            "serve (uvicorn/",
            "_run_module",
            "_run_code",
            "run (asyncio/events.py)",
        )
    )


def summary_markdown(summary: dict[str, object], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{summary['samples']} samples (active time only: idle waits excluded).",
        "",
        "## Top frames by own time",
        "",
        "| % | frame |",
        "|---:|---|",
    ]
    lines += [f"| {p} | `{k}` |" for k, p in summary["own"]]  # type: ignore[union-attr]
    lines += ["", "## Own time by library", "", "| % | library |", "|---:|---|"]
    lines += [f"| {p} | {k} |" for k, p in summary["categories"]]  # type: ignore[union-attr]
    lines += [
        "",
        "## The gateway's own functions by total time (callees included)",
        "",
        f"{summary['in_route_pct']}% of the time is spent inside a route function (gateway/routes/); "
        "the rest is uvicorn, the middleware stack, FastAPI's routing and sending the response.",
        "",
        "| % | frame |",
        "|---:|---|",
    ]
    lines += [f"| {p} | `{k}` |" for k, p in summary["gateway"]]  # type: ignore[union-attr]
    lines += ["", "## Top frames by total time (callees included)", "", "| % | frame |", "|---:|---|"]
    lines += [f"| {p} | `{k}` |" for k, p in summary["inclusive"]]  # type: ignore[union-attr]
    return "\n".join(lines) + "\n"


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
            transport=args.transport,
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
        f"gateway profile: {args.scenario}, {connections} connections, transport {args.transport}, "
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
    parser.add_argument("--transport", choices=("h1", "aiohttp", "httpx"), default=DEFAULT_TRANSPORT)
    parser.add_argument("--log-level", choices=("warning", "info"), default="warning")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
