"""A closed-loop HTTP/1.1 load generator: raw asyncio protocols, httptools, uvloop.

Used when ``wrk`` is not on PATH, and always for the count-based scenarios (in flight, large
images) that wrk cannot express. Each connection is kept alive and sends its next request as
soon as the previous answer is complete. Nothing is parsed but the status line and the framing:
response bodies are counted, never kept.

Two modes, both bounded in time and in request count:

- duration: ``--warmup W --duration D``: every connection loops; answers completed inside the
  window [W, W+D) are counted and timed; throughput = answers in the window / D.
- rounds: ``--rounds R``: every connection sends exactly R requests, all connections starting
  together once all are open; throughput = all answers / (last answer - start).

Prints ``mark start`` and ``mark end`` lines when the measured window opens and closes (the
harness samples the servers' CPU time there), then ``result {json}``.

    python -m bench.loadgen --port 8080 --connections 32 --warmup 1 --duration 6 \\
        --body '{"model": "m", "prompt": "p"}' --header 'Authorization: Bearer sk-gw-...'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter

import httptools

MAX_REQUESTS = 5_000_000  # hard bound on any run, whatever the mode
CONNECT_ATTEMPTS = 3


class LoadError(Exception):
    pass


READ_BUFFER = 256 * 1024


class Connection(asyncio.BufferedProtocol):
    """One keep-alive connection with at most one request outstanding.

    A buffered protocol: the event loop reads into one reused buffer, so a 32 MB answer costs
    no 32 MB of fresh allocations in the load generator.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buffer = memoryview(bytearray(READ_BUFFER))
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self.status = 0
        self.nbytes = 0
        self.sent_at = 0.0
        self.closed = False

    # -- asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.parser.feed_data(self.buffer[:nbytes])
        except httptools.HttpParserError as exc:
            self._fail(LoadError(f"bad response: {exc}"))
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(LoadError("connection closed"))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.nbytes = 0

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.nbytes += len(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, self.nbytes))

    # -- use
    def request(self, payload: bytes) -> asyncio.Future[tuple[int, int]]:
        waiter = self.loop.create_future()
        self.waiter = waiter
        self.sent_at = time.perf_counter()
        self.transport.write(payload)  # type: ignore[union-attr]
        return waiter

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def expire(self, now: float, timeout: float) -> None:
        if self.waiter is not None and now - self.sent_at > timeout:
            self._fail(LoadError("timeout"))
            if self.transport is not None:
                self.transport.abort()


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.payload = build_request(args.host, args.port, args.path, args.body.encode(), args.header)
        self.latencies: list[float] = []
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.bytes = 0
        self.sent = 0
        self.window_start = math.inf
        self.window_end = math.inf
        self.stop = False
        self.connections: list[Connection] = []
        self.last_done = 0.0
        self.slowest_answer = 0.0

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                _, conn = await loop.create_connection(
                    lambda: Connection(loop), self.args.host, self.args.port
                )
                return conn
            except OSError as exc:
                last = exc
                await asyncio.sleep(0.1 * (attempt + 1))
        raise LoadError(f"cannot connect: {last}")

    def record(self, started: float, done: float, status: int | None, nbytes: int, error: str | None) -> None:
        if not (self.window_start <= done < self.window_end):
            return
        if error is not None:
            self.errors[error] += 1
            return
        self.slowest_answer = max(self.slowest_answer, done - started)  # any status
        self.statuses[status] += 1  # type: ignore[index]
        if status != 200:
            self.errors[f"status {status}"] += 1
            return
        self.ok += 1
        self.bytes += nbytes
        self.latencies.append(done - started)
        self.last_done = max(self.last_done, done)

    async def worker(self, conn: Connection, rounds: int | None, delay: float = 0.0) -> None:
        done_rounds = 0
        perf = time.perf_counter
        if delay > 0:
            await asyncio.sleep(delay)
        while not self.stop and self.sent < MAX_REQUESTS:
            if rounds is not None and done_rounds >= rounds:
                return
            if conn.closed:
                try:
                    conn = await self.connect()
                    self.connections.append(conn)
                except LoadError:
                    self.record(perf(), perf(), None, 0, "connect")
                    await asyncio.sleep(0.05)
                    continue
            self.sent += 1
            done_rounds += 1
            started = perf()
            try:
                status, nbytes = await conn.request(self.payload)
            except LoadError as exc:
                self.record(started, perf(), None, 0, str(exc))
                if conn.transport is not None and not conn.closed:
                    conn.transport.abort()
                    conn.closed = True
                continue
            self.record(started, perf(), status, nbytes, None)

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.perf_counter()
            for conn in self.connections:
                conn.expire(now, self.args.timeout)

    async def main(self) -> dict[str, object]:
        args = self.args
        hard_deadline = time.perf_counter() + args.deadline
        opened = await asyncio.gather(*(self.connect() for _ in range(args.connections)))
        self.connections = list(opened)
        dog = asyncio.create_task(self.watchdog())
        cpu0 = time.process_time()
        start = time.perf_counter()
        if args.rounds:
            self.window_start, self.window_end = start, math.inf
            mark("start")
            tasks = [asyncio.create_task(self.worker(c, args.rounds)) for c in self.connections]
            remaining = hard_deadline - time.perf_counter()
            _, pending = await asyncio.wait(tasks, timeout=max(1.0, remaining))
            self.stop = True
            for task in pending:
                task.cancel()
            end = self.last_done if not pending else time.perf_counter()
            mark("end")
            elapsed = max(1e-9, end - start)
            if pending:
                self.errors["unfinished at deadline"] += len(pending)
        else:
            self.window_start = start + args.warmup
            self.window_end = self.window_start + args.duration
            spread = args.stagger / len(self.connections)
            tasks = [
                asyncio.create_task(self.worker(c, None, i * spread)) for i, c in enumerate(self.connections)
            ]
            await asyncio.sleep(args.warmup)
            mark("start")
            cpu0 = time.process_time()
            await asyncio.sleep(max(0.0, self.window_end - time.perf_counter()))
            mark("end")
            cpu1 = time.process_time()
            self.stop = True
            _, pending = await asyncio.wait(tasks, timeout=args.timeout + 1)
            for task in pending:
                task.cancel()
            elapsed = args.duration
        cpu = (cpu1 if not args.rounds else time.process_time()) - cpu0
        dog.cancel()
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.close()
        lat = sorted(self.latencies)
        return {
            "mode": "rounds" if args.rounds else "duration",
            "connections": args.connections,
            "requests": self.ok,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "elapsed_s": elapsed,
            "rps": self.ok / elapsed,
            "p50_ms": percentile(lat, 0.50),
            "p90_ms": percentile(lat, 0.90),
            "p99_ms": percentile(lat, 0.99),
            "max_ms": lat[-1] * 1000 if lat else None,
            "slowest_answer_ms": self.slowest_answer * 1000,  # of any status, errors included
            "mean_ms": sum(lat) / len(lat) * 1000 if lat else None,
            "mean_response_bytes": self.bytes / self.ok if self.ok else 0,
            "loadgen_cpu_s": cpu,
            "loadgen_cpu_pct": 100.0 * cpu / elapsed,
        }


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index] * 1000


def mark(what: str) -> None:
    print(f"mark {what} {time.time():.6f}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/images/generations")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=0, help="requests per connection (count mode)")
    parser.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        help="duration mode: spread the connections' first requests over this many seconds",
    )
    parser.add_argument(
        "--body", default='{"model": "doubao-seedream-4-5-251128", "prompt": "bench", "n": 1}'
    )
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--deadline", type=float, default=120.0, help="hard bound on the whole run")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("load is only ever sent to the loopback interface")
    if not 1 <= args.connections <= 20_000:
        parser.error("--connections must be 1..20000")
    if args.rounds < 0 or args.connections * args.rounds > MAX_REQUESTS:
        parser.error("--rounds out of bounds")
    if args.stagger > args.warmup:
        parser.error("--stagger must not exceed --warmup")
    if not args.rounds and args.warmup + args.duration > args.deadline:
        parser.error("--warmup + --duration exceed --deadline")
    return args


def raise_open_files_limit() -> None:
    """One socket per connection: a 10,000-connection burst needs more than the usual 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_open_files_limit()
    import uvloop

    result = uvloop.run(Run(args).main())
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
