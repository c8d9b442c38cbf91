"""The built-in upstream simulator: as a child of ``gateway serve``, and as ``gateway simulate-upstream``."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from gateway.cli.common import CommandError, Commands
from gateway.store import embedded as embedded_redis


def add_simulate_command(commands: Commands) -> None:
    from gateway.simulator.arguments import build_parser  # not the server: no aiohttp import

    parent = build_parser()
    command = commands.add_parser(
        "simulate-upstream",
        help="run the built-in upstream simulator",
        description=parent.description,
        epilog=parent.epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent],
        add_help=False,
        conflict_handler="resolve",
    )
    command.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from gateway import simulator

    simulator.run(args.host, args.port, args.api_key, args.latency, stream_gap=args.stream_gap)
    return 0


@dataclass
class SimulatorProcess:
    """The simulator child of ``gateway serve``, launched but perhaps not listening yet."""

    process: subprocess.Popen[bytes]
    port: int
    key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Return once it accepts connections; CommandError if it exits or takes too long."""
        _wait_for_port(self.port, self.process)


def launch_simulator(stack: contextlib.ExitStack) -> SimulatorProcess:
    """Start the simulator on a free port with a fresh key, stopped with ``stack``, without
    waiting for it: its start-up (about a second of imports) runs beside the gateway's own."""
    port = embedded_redis.free_port()
    key = "sim-" + secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.simulator", "--port", str(port), "--api-key", key],
        stdin=subprocess.DEVNULL,
        preexec_fn=embedded_redis.die_with_parent,
    )
    stack.callback(_stop_process, process)
    return SimulatorProcess(process, port, key)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError("the upstream simulator exited at start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise CommandError("the upstream simulator did not start in time")


def print_simulator_banner(url: str) -> None:
    line = "!" * 78
    print(
        f"\n{line}\n!!  NO GATEWAY_UPSTREAM_API_KEY: images come from the built-in SIMULATOR\n"
        f"!!  at {url}, not from the real upstream. Nothing is billed.\n"
        f"!!  Set GATEWAY_UPSTREAM_API_KEY (and GATEWAY_UPSTREAM_BASE_URL) for real images.\n{line}\n",
        file=sys.stderr,
    )
