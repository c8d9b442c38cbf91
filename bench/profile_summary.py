"""The summary of a py-spy recording (bench/profile.py): collapsed stacks in, tables out.

Own time by frame, total time by frame, and own time by library: each sample is charged to the
first library found walking up from the leaf, skipping glue like asyncio, contextlib and typing.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

# Each sample is charged to the first frame, walking up from the leaf, whose file (as py-spy shortens
# it: the package-relative path) starts with one of these.
CATEGORIES: list[tuple[str, str]] = [
    ("fastapi/", "FastAPI (routing, dependencies, params)"),
    ("starlette/", "Starlette (routing, requests, responses)"),
    ("uvicorn/", "uvicorn (HTTP server protocol)"),
    ("pydantic", "pydantic"),
    ("redis/", "redis-py (client, pool, parser)"),
    ("hiredis", "redis-py (client, pool, parser)"),
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
    ("gateway/upstream/http1/", "gateway/http1 (upstream transport)"),
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
