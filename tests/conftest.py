"""Shared fixtures: a real Redis, the simulator and a gateway for the session, and factories
for tests that need their own (outages, several replicas, special settings)."""

from __future__ import annotations

import compileall
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Gateway, RedisServer, Simulator, gateway_env, openai_sdk

# The fixture ``upstream`` (a scripted, hostile upstream of the test's own) for every module.
pytest_plugins = ["tests.scripted_upstream"]


# Where ``PYTHONDONTWRITEBYTECODE`` is set (containers, CI images, this machine), nothing writes
# ``__pycache__``. This process then rewrote the asserts of every test module again at each run
# (pytest caches the rewritten modules only where bytecode may be written): 6 s of collection.
# The test modules are imported after this conftest.
sys.dont_write_bytecode = False


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the project's own modules to bytecode once, before anything starts a process.

    The suite starts some 200 Python processes of the project (gateways, their workers, the CLI,
    the simulator, spawned helpers), which inherit ``PYTHONDONTWRITEBYTECODE``: each one compiled
    the gateway's sources again (0.1 s or more of CPU a start). compileall writes the bytecode
    regardless, and only for what changed since the last run (a stale .pyc is never used: its
    source mtime is checked at import). Under pytest-xdist the controller does it before it starts
    the workers."""
    if hasattr(session.config, "workerinput"):  # an xdist worker
        return
    for package in ("gateway", "tests", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)


# Seconds per test file (set-up, call and tear-down), shown at the end of every run: the suite
# must stay under ten minutes here, and this says where its time goes.
_FILE_SECONDS: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _FILE_SECONDS[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    slowest = sorted(_FILE_SECONDS.items(), key=lambda item: -item[1])[:15]
    if slowest:
        terminalreporter.write_sep("=", "slowest test files (set-up + call + tear-down)")
        for path, seconds in slowest:
            terminalreporter.write_line(f"{seconds:7.1f} s  {path}")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def redis_server(session_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(session_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def simulator(session_dir: Path) -> Iterator[Simulator]:
    sim = Simulator(session_dir / "simulator.log").start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def gateway(redis_server: RedisServer, simulator: Simulator, session_dir: Path) -> Iterator[Gateway]:
    """One gateway for the tests that need nothing special; each test uses its own keys."""
    env = gateway_env(redis_server.url, simulator.url, session_dir / "gw-state")
    gw = Gateway(env, session_dir / "gateway.log").start()
    yield gw
    gw.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def simulator_factory(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def make(**kwargs: Any) -> Simulator:
        sim = Simulator(tmp_path / f"simulator-{len(started)}.log", **kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways with their own settings: ``make(redis_url, upstream_url, **env)``."""
    started: list[Gateway] = []

    def make(redis_url: str, upstream_url: str, wait_ready: bool = True, **extra_env: str) -> Gateway:
        index = len(started)
        env = gateway_env(redis_url, upstream_url, tmp_path / f"gw-state-{index}", **extra_env)
        gw = Gateway(env, tmp_path / f"gateway-{index}.log")
        started.append(gw)
        return gw.start(wait_ready=wait_ready)

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def openai_client(gateway: Gateway) -> Callable[..., Any]:
    """``openai_client(key)``: the official SDK pointed at the session gateway."""

    def make(key: str, **kwargs: Any) -> Any:
        return openai_sdk(gateway.url, key, **kwargs)

    return make
