"""``gateway serve``: settings checked once, local state made private, then uvicorn.

Everything that can refuse to start (a bad setting, a bad prices or channels file, no master key
where the simulator is not allowed) is checked before anything is started or created, so a refused start
leaves no embedded Redis or state behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
from types import FrameType
from typing import Any

from gateway.admin.layout_upgrade import ensure_layout
from gateway.cli import demo
from gateway.cli.common import Commands
from gateway.cli.simulator_process import SimulatorProcess, launch_simulator, print_simulator_banner
from gateway.cli.store import connected
from gateway.core import private_files
from gateway.core.settings import Settings, SettingsError, load_settings, placeholder_setting
from gateway.money import pricing
from gateway.store import embedded as embedded_redis
from gateway.upstream.channels import channels_of


def add_serve_command(commands: Commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway with the GATEWAY_* settings from the environment. With no "
        "GATEWAY_REDIS_URL it starts an embedded Redis (data under GATEWAY_STATE_DIR/redis, "
        "password in GATEWAY_STATE_DIR/redis/password); with no GATEWAY_UPSTREAM_API_KEY it "
        "starts the built-in upstream simulator and says so. Local state is created private "
        "to the user (0700 directories, 0600 files).",
    )
    serve.add_argument(
        "--demo-key",
        action="store_true",
        help="print a demo team key (kept across restarts in GATEWAY_STATE_DIR) and a ready "
        "example; with no GATEWAY_ADMIN_TOKEN, also make and print a local admin token",
    )
    serve.set_defaults(handler=serve_command)


def checked_settings() -> Settings:
    """The settings, refused before anything starts if the gateway could not run with them."""
    settings = load_settings()  # once, in the parent: a bad setting must not loop worker restarts
    placeholder = placeholder_setting(settings)
    if placeholder is not None:
        raise SettingsError(placeholder)
    if settings.prices_file is not None:
        try:
            pricing.load_prices_file(settings.prices_file)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"invalid setting GATEWAY_PRICES_FILE: {exc}") from None
    if settings.channels_file is not None:
        channels_of(settings)  # every channel checked, its key read: the workers read it again
    elif settings.upstream_api_key is None and not settings.allow_simulator:
        raise SettingsError(
            "invalid setting GATEWAY_UPSTREAM_API_KEY: not set, and GATEWAY_ALLOW_SIMULATOR is false"
        )
    return settings


def serve_command(args: argparse.Namespace) -> int:
    settings = checked_settings()
    private_files.restrict_umask()  # spool, metrics files, logs: inherited by workers and children
    private_files.private_directory(settings.state_dir)
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if settings.redis_url is None:
            redis = embedded_redis.start(settings.state_dir)
            stack.callback(redis.stop)
            env["GATEWAY_REDIS_URL"] = redis.url
            print(
                f"embedded Redis: {redis.public_url} (data in {redis.directory}, password in "
                f"{redis.directory / embedded_redis.PASSWORD_FILE})",
                file=sys.stderr,
            )
        simulator: SimulatorProcess | None = None
        if settings.upstream_api_key is None and settings.channels_file is None:
            simulator = launch_simulator(stack)  # waited for just before serving
            env["GATEWAY_UPSTREAM_BASE_URL"], env["GATEWAY_UPSTREAM_API_KEY"] = simulator.url, simulator.key
            print_simulator_banner(simulator.url)
        admin_token = None
        if args.demo_key and settings.admin_token is None:
            admin_token = env["GATEWAY_ADMIN_TOKEN"] = demo.local_admin_token(settings.state_dir)
        env.update(_metrics_dir(settings, stack))
        os.environ.update(env)
        settings = load_settings()
        if args.demo_key:
            token = asyncio.run(_demo_key(settings))
            demo.print_example(settings, token, admin_token)
        return _run_uvicorn(settings, simulator)


async def _demo_key(settings: Settings) -> str:
    async with connected(settings.redis_url or "") as redis:
        await ensure_layout(redis)  # a store of the release before is moved before keys are made
        return await demo.demo_key(redis, settings.state_dir)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _run_uvicorn(settings: Settings, simulator: SimulatorProcess | None = None) -> int:
    """Serve until SIGTERM/SIGINT; in-flight requests finish first (graceful shutdown).

    Several workers on Linux each get a listening socket of their own (gateway/cli/workers.py).

    uvicorn re-raises the signal it caught once it has shut down; the handler installed here
    turns that into a normal exit, so the embedded Redis and the simulator are stopped too.

    A simulator child is waited for here, last: it imports its server while this process
    imports uvicorn and, with one worker (served by this very process), the app.
    """
    import uvicorn  # here, not at the top: every other CLI command would pay for importing it

    from gateway.cli import workers
    from gateway.core.http_limits import BoundedHttpToolsProtocol

    if simulator is not None:
        if settings.workers == 1:
            import gateway.app  # noqa: F401 - what uvicorn.run imports next, in this process
        simulator.wait_ready()

    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)

    options: dict[str, Any] = dict(
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop" if _has_uvloop() else "asyncio",
        http=BoundedHttpToolsProtocol,  # httptools with a bound on the request head
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.upstream_timeout_s) + 5,
        server_header=False,
        # uvicorn's default of 2,048 pending connections drops part of a 10,000-call burst (the
        # client retries a dropped SYN after 1 s and more); the kernel caps it at somaxconn.
        backlog=settings.listen_backlog,
    )
    if settings.workers > 1 and workers.supported():  # one SO_REUSEPORT socket per worker
        workers.serve(uvicorn.Config("gateway.app:create_app", **options))
    else:
        uvicorn.run("gateway.app:create_app", **options)
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _metrics_dir(settings: Settings, stack: contextlib.ExitStack) -> dict[str, str]:
    """One multiprocess directory per gateway instance, removed when it stops.

    A fixed shared directory wiped at start would corrupt the numbers of any other gateway
    started from the same folder. One worker needs none.
    """
    if settings.workers == 1:
        return {}
    directory = (settings.state_dir / "metrics" / f"{os.getpid()}-{secrets.token_hex(4)}").resolve()
    directory.mkdir(parents=True)
    stack.callback(shutil.rmtree, directory, True)
    return {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
