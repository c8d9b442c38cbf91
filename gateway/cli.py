"""The ``gateway`` command: serve, simulate-upstream, keys, prices, report, usage.

Every command but ``serve`` and ``simulate-upstream`` talks to Redis directly, so that it works
when no gateway runs. With no ``GATEWAY_REDIS_URL`` it uses the embedded Redis under
``GATEWAY_STATE_DIR``: the running gateway's if there is one, else it starts it for the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from gateway import __version__, embedded_redis, pricing, redis_client
from gateway.keys import DEFAULT_ROTATE_GRACE_S, KeyCreate, KeyLimits, KeyStore
from gateway.settings import Settings, SettingsError, load_settings

DEMO_MODEL = "doubao-seedream-4-5-251128"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except (embedded_redis.EmbeddedRedisError, CommandError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1


class CommandError(Exception):
    """A command failed for a reason the user can act on; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="OpenAI-compatible image generation gateway with team keys and exact budgets.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_serve(commands)
    _add_simulator(commands)
    _add_keys(commands)
    _add_prices(commands)
    from gateway.ledger_cli import add_report_commands

    add_report_commands(commands)
    return parser


# -- serve ------------------------------------------------------------------------------------


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway with the GATEWAY_* settings from the environment. With no "
        "GATEWAY_REDIS_URL it starts an embedded Redis (data under GATEWAY_STATE_DIR/redis); with "
        "no GATEWAY_UPSTREAM_API_KEY it starts the built-in upstream simulator and says so.",
    )
    serve.add_argument(
        "--demo-key", action="store_true", help="issue a demo team key and print a ready example"
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    settings = load_settings()  # once, in the parent: a bad setting must not loop worker restarts
    if settings.prices_file is not None:
        try:
            pricing.load_prices_file(settings.prices_file)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"invalid setting GATEWAY_PRICES_FILE: {exc}") from None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if settings.redis_url is None:
            redis = embedded_redis.start(settings.state_dir)
            stack.callback(redis.stop)
            env["GATEWAY_REDIS_URL"] = redis.url
            print(f"embedded Redis: {redis.url} (data in {redis.directory})", file=sys.stderr)
        if settings.upstream_api_key is None:
            if not settings.allow_simulator:
                raise SettingsError(
                    "invalid setting GATEWAY_UPSTREAM_API_KEY: not set, and GATEWAY_ALLOW_SIMULATOR is false"
                )
            url, key = _start_simulator(stack)
            env["GATEWAY_UPSTREAM_BASE_URL"], env["GATEWAY_UPSTREAM_API_KEY"] = url, key
            _print_simulator_banner(url)
        env.update(_metrics_dir(settings, stack))
        os.environ.update(env)
        settings = load_settings()
        if args.demo_key:
            token = asyncio.run(_issue_demo_key(settings.redis_url or ""))
            _print_example(settings, token)
        return _run_uvicorn(settings)


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _run_uvicorn(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; in-flight requests finish first (graceful shutdown).

    uvicorn re-raises the signal it caught once it has shut down; the handler installed here
    turns that into a normal exit, so the embedded Redis and the simulator are stopped too.
    """
    import uvicorn

    from gateway.http_limits import BoundedHttpToolsProtocol  # httptools + a header size bound

    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)

    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop" if _has_uvloop() else "asyncio",
        http=BoundedHttpToolsProtocol,
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.upstream_timeout_s) + 5,
        server_header=False,
    )
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


def _start_simulator(stack: contextlib.ExitStack) -> tuple[str, str]:
    port = embedded_redis.free_port()
    key = "sim-" + secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.simulator", "--port", str(port), "--api-key", key],
        stdin=subprocess.DEVNULL,
        preexec_fn=embedded_redis.die_with_parent,
    )
    stack.callback(_stop_process, process)
    _wait_for_port(port, process)
    return f"http://127.0.0.1:{port}", key


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError("the upstream simulator exited at start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise CommandError("the upstream simulator did not start in time")


def _print_simulator_banner(url: str) -> None:
    line = "!" * 78
    print(
        f"\n{line}\n!!  NO GATEWAY_UPSTREAM_API_KEY: images come from the built-in SIMULATOR\n"
        f"!!  at {url}, not from the real upstream. Nothing is billed.\n"
        f"!!  Set GATEWAY_UPSTREAM_API_KEY (and GATEWAY_UPSTREAM_BASE_URL) for real images.\n{line}\n",
        file=sys.stderr,
    )


async def _issue_demo_key(redis_url: str) -> str:
    """A fresh demo key each start; the previous one is revoked (its secret was printed once)."""
    from gateway.redis_keys import DEMO_KEY

    async with _redis(redis_url) as redis:
        await pricing.seed_prices(redis, None)
        store = KeyStore(redis)
        previous = await redis.get(DEMO_KEY)
        if previous:
            await store.revoke(previous.decode())
        token, record = await store.create(
            KeyCreate(
                team="demo", name="make-run demo key", budget_usd=Decimal("5"), budget_period="day", rpm=60
            )
        )
        await redis.set(DEMO_KEY, record["key_id"])
        return token


def _print_example(settings: Settings, token: str) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    print(
        f"""
Gateway starting on {base}  (docs: {base}/docs, metrics: {base}/metrics)

Demo team key (team "demo", $5.00 a day, 60 requests/minute), shown once:
  {token}

Try it with curl:
  curl -s {base}/v1/images/generations \\
    -H "Authorization: Bearer {token}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "{DEMO_MODEL}", "prompt": "a red fox in the snow, watercolor", "size": "2K"}}'

Or with the OpenAI Python SDK (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{token}")
  image = client.images.generate(model="{DEMO_MODEL}", prompt="a red fox in the snow")
  print(image.data[0].url)
""",
        flush=True,
    )


# -- simulate-upstream -------------------------------------------------------------------------


def _add_simulator(commands: Any) -> None:
    from gateway import simulator

    parent = simulator.build_parser()
    sim = commands.add_parser(
        "simulate-upstream",
        help="run the built-in upstream simulator",
        description=parent.description,
        epilog=parent.epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent],
        add_help=False,
        conflict_handler="resolve",
    )
    sim.set_defaults(
        handler=lambda args: simulator.run(args.host, args.port, args.api_key, args.latency) or 0
    )


# -- Redis for the admin commands ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def _redis(url: str) -> AsyncIterator[Any]:
    client = await redis_client.connect(url)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.contextmanager
def admin_redis_url() -> Any:
    """The Redis an admin command should use, starting the embedded one if nobody runs it."""
    settings = load_settings()
    if settings.redis_url:
        yield settings.redis_url
        return
    lock = settings.state_dir / "redis" / "gateway.lock"
    try:
        redis = embedded_redis.start(settings.state_dir)
    except embedded_redis.EmbeddedRedisError:
        url = _url_from_lock(lock)
        if url is None:
            raise
        yield url
        return
    try:
        yield redis.url
    finally:
        redis.stop()


def _url_from_lock(lock: Path) -> str | None:
    try:
        text = lock.read_text()
    except OSError:
        return None
    for word in text.replace(",", " ").split():
        if word.startswith("redis://"):
            return word
    return None


def run_with_redis(action: Callable[[Any], Any]) -> Any:
    """Run ``action(redis)`` against the admin Redis and return its result."""

    async def go(url: str) -> Any:
        async with _redis(url) as redis:
            return await action(redis)

    with admin_redis_url() as url:
        return asyncio.run(go(url))


# -- keys ------------------------------------------------------------------------------------------


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="comma-separated models the key may use (default: all)")
    parser.add_argument("--expires", help="expiry, ISO 8601 date or time (UTC)")
    parser.add_argument("--budget-usd", help="spend budget in USD")
    parser.add_argument(
        "--budget-period", choices=["day", "month", "total"], help="budget period (default month)"
    )
    parser.add_argument("--images-per-day", type=_count, help="cap on images per UTC day")
    parser.add_argument("--rpm", type=_count, help="requests per minute")
    parser.add_argument("--max-concurrent", type=_count, help="requests in flight at once")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.epilog = "Give 'none' to a limit to remove it (update), e.g. --budget-usd none."


_NONE = ("none", "unlimited")


def _count(text: str) -> int | str:
    if text.lower() in _NONE:
        return "none"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or 'none': {text!r}") from None


def _limits_from_args(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if args.models is not None:
        given["models"] = [m.strip() for m in args.models.split(",") if m.strip()] or None
    if args.expires is not None:
        given["expires_at"] = None if args.expires.lower() in _NONE else _parse_when(args.expires)
    if args.budget_usd is not None:
        given["budget_usd"] = None if args.budget_usd.lower() in _NONE else args.budget_usd
    for name in ("budget_period", "images_per_day", "rpm", "max_concurrent"):
        value = getattr(args, name)
        if value is not None:
            given[name] = None if value == "none" else value
    return given


def _parse_when(text: str) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"not an ISO 8601 date or time: {text!r}") from None


def _add_keys(commands: Any) -> None:
    keys = commands.add_parser(
        "keys", help="issue and manage team keys", description="Issue and manage team keys."
    )
    sub = keys.add_subparsers(title="key commands", metavar="ACTION")

    create = sub.add_parser("create", help="issue a key (the secret is printed once)")
    create.add_argument("--team", required=True)
    create.add_argument("--name", required=True)
    _add_limit_options(create)
    create.set_defaults(handler=_keys_create)

    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--team")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_keys_list)

    for name, helptext, handler in (
        ("show", "show one key", _keys_show),
        ("revoke", "revoke a key at once", _keys_revoke),
        ("usage", "a key's budget, spend and reservations now", _keys_usage),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("key_id")
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(handler=handler)

    update = sub.add_parser("update", help="change a key's limits (only the options given)")
    update.add_argument("key_id")
    _add_limit_options(update)
    update.set_defaults(handler=_keys_update)

    rotate = sub.add_parser("rotate", help="a new secret for the same key_id, limits and spend")
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace-seconds",
        type=int,
        default=DEFAULT_ROTATE_GRACE_S,
        help="how long the old secret keeps working (default 3600)",
    )
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=_keys_rotate)


def _validated(model: type, data: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CommandError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _keys_create(args: argparse.Namespace) -> int:
    spec = _validated(KeyCreate, {"team": args.team, "name": args.name, **_limits_from_args(args)})
    token, record = run_with_redis(lambda r: KeyStore(r).create(spec))
    if args.json:
        _print_json({**record, "key": token})
    else:
        _print_record(record)
        print(f"\nkey (shown once, store it now):\n  {token}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    records = run_with_redis(lambda r: KeyStore(r).list(args.team))
    if args.json:
        _print_json(records)
    else:
        columns = ["key_id", "team", "name", "status", "budget_usd", "budget_period", "rpm", "last4"]
        print_table(columns, [[r[c] for c in columns] for r in records])
    return 0


def _one(args: argparse.Namespace, action: Callable[[KeyStore], Any]) -> Any:
    result = run_with_redis(lambda r: action(KeyStore(r)))
    if result is None:
        raise CommandError(f"no key with key_id {args.key_id!r}")
    return result


def _keys_show(args: argparse.Namespace) -> int:
    record = _one(args, lambda s: s.get(args.key_id))
    _print_json(record) if args.json else _print_record(record)
    return 0


def _keys_update(args: argparse.Namespace) -> int:
    limits = _validated(KeyLimits, _limits_from_args(args))
    record = _one(args, lambda s: s.update(args.key_id, limits))
    _print_json(record) if args.json else _print_record(record)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    record = _one(args, lambda s: s.revoke(args.key_id))
    _print_json(record) if args.json else _print_record(record)
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    token, record = _one(args, lambda s: s.rotate(args.key_id, args.grace_seconds))
    if args.json:
        _print_json({**record, "key": token, "previous_key_valid_for_s": args.grace_seconds})
    else:
        _print_record(record)
        print(f"\nnew key (shown once; the old one works {args.grace_seconds} s more):\n  {token}")
    return 0


def _keys_usage(args: argparse.Namespace) -> int:
    from gateway.routes.admin import usage_report

    async def action(redis: Any) -> Any:
        if await KeyStore(redis).get_record(args.key_id) is None:
            return None
        return await usage_report(redis, args.key_id)

    report = run_with_redis(action)
    if report is None:
        raise CommandError(f"no key with key_id {args.key_id!r}")
    _print_json(report) if args.json else _print_record(report)
    return 0


# -- prices ----------------------------------------------------------------------------------------


def _add_prices(commands: Any) -> None:
    prices = commands.add_parser(
        "prices",
        help="show and change the price table",
        description="The per-image price table, shared by every replica through Redis.",
    )
    sub = prices.add_subparsers(title="price commands", metavar="ACTION")
    listing = sub.add_parser("list", help="the current prices")
    listing.add_argument("--history", action="store_true", help="also every change and when it took effect")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_prices_list)
    setter = sub.add_parser("set", help="set one model's price in USD per image")
    setter.add_argument("model")
    setter.add_argument("price_usd")
    setter.add_argument("--json", action="store_true")
    setter.set_defaults(handler=_prices_set)


def _prices_list(args: argparse.Namespace) -> int:
    async def action(redis: Any) -> Any:
        await pricing.seed_prices(redis, load_settings().prices_file)
        return await pricing.read_prices(redis), await pricing.price_history(redis)

    prices, history = run_with_redis(action)
    rows = [{"model": m, "price_usd": pricing.micros_to_usd(p)} for m, p in sorted(prices.items())]
    changes = [c.as_json() for c in history]
    if args.json:
        _print_json({"prices": rows, **({"history": changes} if args.history else {})})
        return 0
    print_table(["model", "price_usd"], [[r["model"], r["price_usd"]] for r in rows])
    if args.history:
        print()
        print_table(
            ["effective_at", "model", "price_usd", "source"],
            [[c["effective_at"], c["model"], c["price_usd"], c["source"]] for c in changes],
        )
    return 0


def _prices_set(args: argparse.Namespace) -> int:
    try:
        micros = pricing.usd_to_micros(args.price_usd)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    change = run_with_redis(lambda r: pricing.set_price(r, args.model, micros, "cli"))
    _print_json(change.as_json()) if args.json else print(
        f"{args.model}: ${change.as_json()['price_usd']} per image from {change.as_json()['effective_at']}"
    )
    return 0


# -- output ----------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _print_record(record: dict[str, Any]) -> None:
    width = max(len(k) for k in record)
    for name, value in record.items():
        shown = "-" if value is None else ",".join(value) if isinstance(value, list) else value
        print(f"{name:<{width}}  {shown}")


def print_table(columns: list[str], rows: list[list[Any]]) -> None:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
