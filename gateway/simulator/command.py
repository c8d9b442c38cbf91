"""Running the simulator: the command line (``gateway simulate-upstream``, ``python -m
gateway.simulator``) and the server loop behind it."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from gateway.simulator.app import create_app
from gateway.simulator.arguments import build_parser
from gateway.simulator.limits import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STREAM_GAP


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve(host: str, port: int, api_key: str | None, latency: float, stream_gap: float) -> None:
    # Access logs off: under a burst of concurrent requests, formatting log lines costs more
    # than answering. A short shutdown timeout: in-flight calls are only simulated work. Handlers
    # are cancelled when their client leaves, so a stalled stream does not wait out its stall.
    runner = web.AppRunner(
        create_app(api_key, latency, stream_gap),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        # A deep accept backlog, so a burst of 1,000 connections is not met with SYN retries
        # that would show up as one-second stalls in the benchmark.
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound_port = runner.addresses[0][1] if runner.addresses else port
        print(
            f"simulator listening on http://{_display_host(host)}:{bound_port}", file=sys.stderr, flush=True
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                pass
        await stop.wait()
    finally:
        await runner.cleanup()


def run(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    latency: float = 0.0,
    stream_gap: float = DEFAULT_STREAM_GAP,
) -> None:
    """Serve until SIGTERM or SIGINT. Prints ``simulator listening on http://host:port`` to
    stderr once the port is bound, so scripts can wait for that line (port 0 picks a free port
    and the line shows which)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(_serve(host, port, api_key, latency, stream_gap))
        except KeyboardInterrupt:
            # A second Ctrl-C, or one before the handlers are installed.
            pass


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        run(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            latency=args.latency,
            stream_gap=args.stream_gap,
        )
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
