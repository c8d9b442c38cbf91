"""Running the simulator: the command line (``gateway simulate-upstream``, ``python -m
gateway.simulator``) and the server loop behind it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from gateway.simulator.app import create_app
from gateway.simulator.faults import int_in, seconds
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
    # Access logs off: at 1,000 concurrent requests, formatting log lines costs more than
    # answering. A short shutdown timeout: in-flight calls are only simulated work. Handlers
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


def _non_negative_seconds(value: str) -> float:
    try:
        return seconds(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            str(exc) if "between" in str(exc) else f"not a number: {value!r}"
        ) from None


def _port(value: str) -> int:
    try:
        return int_in(0, 65535)(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {value!r}") from None


_HELP_DESCRIPTION = """\
Run a local stand-in for the upstream image API (POST /v1/images/generations):
same request and response shapes, real PNG or JPEG images, server-sent events
for "stream": true, and failures on request.
Recorded calls: GET /_simulator/requests; forget them: POST /_simulator/reset."""

_HELP_EPILOG = """\
faults, per request, as name=value pairs separated by commas, given as the
header x-simulator-fault, else the query parameter simulator_fault, else the
JSON body field "simulator_fault" (the one that passes through the gateway):
  status=CODE      answer CODE (400-599) with an upstream-style error envelope
  code=STRING      the envelope's error code (alone: a 400, e.g. content safety)
  delay=SECONDS    wait this long first, instead of --latency
  drop=1           close the connection without answering
  garbage=1        answer an HTML page; garbage=truncated: cut-off JSON
  images=K         return exactly K images
  image_bytes=B    make each image about B bytes of base64
  fail_images=I,J  entries I, J (from 0) are failed entries; fail_images=all
  fail_code=CODE   their error code (default OutputImageSensitiveContentDetected)
  usage_images=N   usage.generated_images says N; usage_images=none: no usage
  stream_gap=S     seconds between a stream's image events, instead of --stream-gap
  break_after=K    a stream's connection drops after K events
  stall_after=K    a stream goes quiet after K events, for stall=S seconds
                   (default: an hour), then goes on
example: x-simulator-fault: status=500,delay=1"""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``gateway simulate-upstream`` / ``python -m gateway.simulator``."""
    parser = argparse.ArgumentParser(
        prog="gateway simulate-upstream",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_HELP_DESCRIPTION,
        epilog=_HELP_EPILOG,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require `Authorization: Bearer KEY` like the upstream; default: accept any key",
    )
    parser.add_argument(
        "--latency",
        type=_non_negative_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before answering each generation call, as a real image model would (default 0)",
    )
    parser.add_argument(
        "--stream-gap",
        type=_non_negative_seconds,
        default=DEFAULT_STREAM_GAP,
        metavar="SECONDS",
        help='wait this long between the image events of a "stream": true answer '
        f"(default {DEFAULT_STREAM_GAP:g})",
    )
    return parser


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
