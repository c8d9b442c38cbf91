"""The simulator's command line: its options and help, without the server.

Kept apart from ``command.py`` (which imports aiohttp) so that the ``gateway`` command can show
``simulate-upstream --help`` and build its parser without importing the server, which every CLI
call would otherwise pay for.
"""

from __future__ import annotations

import argparse

from gateway.simulator.faults import int_in, seconds
from gateway.simulator.limits import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STREAM_GAP


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
