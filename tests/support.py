"""Real processes for the tests: redis-server, the upstream simulator, gateways.

Nothing here is a mock: each helper starts the real program on a free loopback port and waits
for it to answer (polling with a deadline, never a bare sleep).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.store.embedded import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
# httpx builds a new SSL context for every client it makes (about 30 ms here), even for plain
# http://, and httpx.get/post make one per call. The helpers below make thousands of loopback
# calls: they share one context (2 ms a client).
TLS = ssl.create_default_context()
ADMIN_TOKEN = "test-admin-" + secrets.token_hex(16)
UPSTREAM_KEY = "test-master-" + secrets.token_hex(16)
MODEL = "doubao-seedream-4-5-251128"
MODEL_PRICE_MICROS = 135_000


_HANDED_OUT: set[int] = set()


def worker_slot() -> tuple[int, int]:
    """(this pytest-xdist worker's index, how many workers run); (0, 1) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    return (int(name[2:]) if name.startswith("gw") else 0), int(
        os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    )


def port_is_mine(port: int) -> bool:
    """Whether ``port`` belongs to this worker: worker k of n takes only ports whose half is k modulo
    n, so two workers never choose the same one (chosen, a port stays free until its process binds
    it). The half: Linux gives ``bind`` odd ports only (even ones are left to ``connect``)."""
    index, count = worker_slot()
    return (port // 2) % count == index


def free_port(limit: int = 55535) -> int:
    """A free loopback port (at most ``limit``: cluster nodes also use port + 10000), never one
    handed out before in this run, nor one another worker may choose: processes started side by
    side (``ready_together``, other workers) may not have bound theirs yet when the next is chosen."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port <= limit and port_is_mine(port) and port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class UtcSpan:
    """The UTC days and months a stretch of a test ran in: one, or two when it crossed midnight.

    A test that checks what the gateway named by the clock (a day's counter, an alert's period)
    starts a span before its calls and accepts any period the span covers, so the suite passes on
    the last day of a month and across midnight alike.
    """

    def __init__(self) -> None:
        self.started_s = time.time()

    def days(self) -> list[str]:
        from gateway.money.periods import Periods

        return sorted({Periods.at(self.started_s).day, Periods.now().day})

    def months(self) -> list[str]:
        from gateway.money.periods import Periods

        return sorted({Periods.at(self.started_s).month, Periods.now().month})

    def range(self) -> dict[str, str]:
        """``start`` and ``end`` for a report or export that covers every call made in the span."""
        days = self.days()
        return {"start": days[0], "end": days[-1]}


def wait_until(
    condition: Callable[[], Any], timeout_s: float = 15.0, interval_s: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail the test after the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last_error = exc
        time.sleep(interval_s)
    raise AssertionError(
        f"timed out waiting for {what}" + (f" (last error: {last_error!r})" if last_error else "")
    )


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class RedisServer:
    """A real redis-server, startable again on the same port and data (for outage tests)."""

    directory: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, what=f"redis-server on {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def kill(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGKILL)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)


@dataclass
class Simulator:
    """The built-in upstream simulator, as a real process."""

    log_path: Path
    api_key: str = UPSTREAM_KEY
    latency_s: float = 0.0
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Simulator:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway.simulator",
                    "--port",
                    str(self.port),
                    "--api-key",
                    self.api_key,
                    "--latency",
                    str(self.latency_s),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        healthz = f"{self.url}/healthz"
        wait_until(lambda: httpx.get(healthz, verify=TLS, timeout=1).status_code == 200, what="simulator")
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_simulator/requests", verify=TLS, timeout=10).json()["requests"])

    def count(self) -> int:
        return int(httpx.get(f"{self.url}/_simulator/requests", verify=TLS, timeout=10).json()["count"])

    def reset(self) -> None:
        httpx.post(f"{self.url}/_simulator/reset", verify=TLS, timeout=10).raise_for_status()


@dataclass
class Gateway:
    """A real `gateway serve` process."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> Gateway:
        env = {**os.environ, **self.env, "GATEWAY_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        return self.wait_ready() if wait_ready else self

    def wait_ready(self) -> Gateway:
        wait_until(self.ready, timeout_s=30, what=f"gateway on {self.port} (log: {self.log_path})")
        return self

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"gateway exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}"
            )
        try:
            return httpx.get(f"{self.url}/readyz", verify=TLS, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            _stop(self.process, sig)

    def admin(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=TLS)

    def create_key(self, team: str = "team-a", name: str | None = None, **limits: Any) -> tuple[str, str]:
        """Issue a key through the admin API; returns (secret, key_id)."""
        with self.admin() as admin:
            response = admin.post(
                "/admin/v1/keys", json={"team": team, "name": name or f"key-{secrets.token_hex(3)}", **limits}
            )
        assert response.status_code == 201, response.text
        body = response.json()
        return body["key"], body["key_id"]

    def usage(self, key_id: str) -> dict[str, Any]:
        with self.admin() as admin:
            response = admin.get(f"/admin/v1/keys/{key_id}/usage")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def set_team(self, team: str, **settings: Any) -> dict[str, Any]:
        """``PUT /admin/v1/teams/{team}`` with ``settings``; returns the team's settings."""
        with self.admin() as admin:
            response = admin.put(f"/admin/v1/teams/{team}", json=settings)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def team_usage(self, team: str) -> dict[str, Any]:
        with self.admin() as admin:
            response = admin.get(f"/admin/v1/teams/{team}/usage")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", verify=TLS, timeout=10).text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def ready_together(*gateways: Gateway) -> None:
    """Wait for gateways started with ``wait_ready=False``: started one after the other without
    waiting, their start-ups (a second or two of imports each) run side by side."""
    for gateway in gateways:
        gateway.wait_ready()


def gateway_env(redis_url: str, upstream_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_UPSTREAM_BASE_URL": upstream_url,
        "GATEWAY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_STATE_DIR": str(state_dir),
        "GATEWAY_LOG_LEVEL": "info",
        **extra,
    }


def run_cli(redis_url: str, *args: str, state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` against ``redis_url``, as an operator runs it."""
    env = {**os.environ, "GATEWAY_REDIS_URL": redis_url}
    if state_dir is not None:
        env["GATEWAY_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_clis(redis_url: str, *commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """``run_cli`` for independent commands (reads, refusals), side by side."""
    env = {**os.environ, "GATEWAY_REDIS_URL": redis_url}
    return run_together([[sys.executable, "-m", "gateway", *args] for args in commands], env=env)


def run_together(
    commands: Sequence[Sequence[str]], envs: Sequence[dict[str, str]] | None = None, **popen: Any
) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands run side by side (a `python -m gateway` is mostly a second of
    imports); each one's result, in order, with its output as text. ``envs``: one environment per
    command; ``popen``: what they share (env, cwd, ...)."""
    started = [
        subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **{"cwd": ROOT, **popen, **({"env": envs[index]} if envs is not None else {})},
        )
        for index, command in enumerate(commands)
    ]
    done = []
    for command, process in zip(commands, started, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr))
    return done


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


GENERATIONS = "/v1/images/generations"


def access_lines(gw: Gateway, request_id: str) -> list[dict[str, Any]]:
    """The access-log lines of ``request_id`` in the gateway's log."""
    lines = []
    for line in gw.log().splitlines():
        if line.startswith("{") and request_id in line:
            record = json.loads(line)
            if record.get("request_id") == request_id:
                lines.append(record)
    return lines


def the_line(gw: Gateway, response: httpx.Response) -> dict[str, Any]:
    """The one access line of a response, found by its x-request-id."""
    request_id = response.headers["x-request-id"]
    wait_until(lambda: access_lines(gw, request_id), timeout_s=10, what=f"access line of {request_id}")
    lines = access_lines(gw, request_id)
    assert len(lines) == 1, lines
    return lines[0]


def openai_sdk(server_url: str, key: str, **kwargs: Any) -> Any:
    """The official ``openai`` client of the API at ``server_url`` (its ``/v1``) with key ``key``,
    on the suite's one SSL context (it would build one of its own: ~40 ms a client) unless given an
    ``http_client``."""
    from openai import DefaultHttpxClient, OpenAI

    kwargs.setdefault("http_client", DefaultHttpxClient(verify=TLS))
    return OpenAI(base_url=f"{server_url}/v1", api_key=key, **kwargs)


def generate(
    gateway: Gateway | str,
    key: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    client: httpx.Client | None = None,
    **body: Any,
) -> httpx.Response:
    """One ``POST /v1/images/generations`` as key ``key``: the default model and prompt, overridden by
    ``body``; ``headers`` add to (or replace) the Authorization header. ``gateway`` is a Gateway or a
    base URL; with ``client`` the call goes through it, with the client's timeout unless ``timeout`` is
    given (30 s without a client)."""
    url = (gateway.url if isinstance(gateway, Gateway) else gateway) + GENERATIONS
    sent = {"Authorization": f"Bearer {key}", **(headers or {})}
    payload = {"model": MODEL, "prompt": "x", **body}
    if client is not None:
        if timeout is None:
            return client.post(url, headers=sent, json=payload)
        return client.post(url, headers=sent, json=payload, timeout=timeout)
    return httpx.post(url, headers=sent, json=payload, verify=TLS, timeout=30 if timeout is None else timeout)


async def agenerate(
    client: httpx.AsyncClient,
    key: str,
    gateway: Gateway | str = "",
    *,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    """``generate`` through an async client (its own timeout applies); ``gateway`` may be left out
    when the client has the gateway as its base_url."""
    url = (gateway.url if isinstance(gateway, Gateway) else gateway) + GENERATIONS
    sent = {"Authorization": f"Bearer {key}", **(headers or {})}
    return await client.post(url, headers=sent, json={"model": MODEL, "prompt": "x", **body})


async def reserve_one(
    client: Any,
    space: Any,
    secret_hash: str,
    request_id: str,
    *,
    lifetime_ms: int = 60_000,
    max_images: int = 1,
    unit_price_micros: int = 1_000_000,
    model: str = "m",
) -> Any:
    """``budget.reserve`` straight against Redis, for the tests of the scripts themselves."""
    from gateway.money import budget
    from gateway.money.periods import Periods

    return await budget.reserve(
        client,
        space=space,
        secret_hash=secret_hash,
        model=model,
        request_id=request_id,
        max_images=max_images,
        unit_price_micros=unit_price_micros,
        lifetime_ms=lifetime_ms,
        periods=Periods.now(),
    )


def key_space(client: Any, key_id: str) -> Any:
    """The key's ``KeySpace`` (its state's Redis names), its team read from the key's directory entry
    with a synchronous redis client."""
    from gateway.store.keyspace import KeySpace, directory_entry

    team = client.hget(directory_entry(key_id), "team")
    assert team is not None, f"no directory entry for {key_id}"
    return KeySpace(key_id, team.decode() if isinstance(team, bytes) else team)
