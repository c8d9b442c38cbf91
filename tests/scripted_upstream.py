"""A hostile stand-in for the upstream, over real HTTP: each test scripts the answers it needs.

The simulator plays an honest Seedream; this one plays what an upstream must not be trusted with:
echoing our Authorization header into any field, per-image failures with a ``usage`` that
disagrees, oversized headers. It records the Authorization header it was sent, as the real
upstream would see it.

The fixtures ``upstream_server`` (one scripted upstream per module) and ``upstream`` (the same, its
script and record cleared for each test) are registered by ``pytest_plugins`` in tests/conftest.py;
``gateway_of`` starts a gateway in front of it for a module's tests to share; ``answer_json``
scripts a plain JSON answer and ``ledger_record`` reads back what the gateway recorded of a call.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.support import Gateway, free_port, gateway_env, wait_until

# An answer is a response, or a coroutine that writes one as it goes (a streamed, endless or
# broken body).
Answer = Callable[[web.Request, bytes], web.StreamResponse | Awaitable[web.StreamResponse]]


@dataclass
class ScriptedUpstream:
    port: int = field(default_factory=free_port)
    answer: Answer | None = None
    seen_authorization: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen_authorization.append(request.headers.get("Authorization", ""))
        assert self.answer is not None, "the test did not script an answer"
        answer = self.answer(request, body)
        return await answer if inspect.isawaitable(answer) else answer

    def start(self) -> ScriptedUpstream:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/images/generations", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10), "scripted upstream did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[ScriptedUpstream]:
    """One scripted upstream for a test module (a thread: it costs nothing to keep)."""
    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: ScriptedUpstream) -> ScriptedUpstream:
    """The module's scripted upstream, blank for this test: script its ``answer`` before calling
    through it; ``seen_authorization`` holds only this test's calls."""
    upstream_server.answer = None
    upstream_server.seen_authorization.clear()
    return upstream_server


@contextmanager
def gateway_of(redis_url: str, upstream: ScriptedUpstream, directory: Path, **env: str) -> Iterator[Gateway]:
    """A gateway process in front of ``upstream`` (state and log under ``directory``), for a module's
    tests to share: each test uses keys of its own, so none sees another's spending."""
    gw = Gateway(gateway_env(redis_url, upstream.url, directory / "state", **env), directory / "gateway.log")
    try:
        yield gw.start()
    finally:
        gw.stop()


def answer_json(status: int, document: Any, headers: dict[str, str] | None = None) -> Answer:
    """Answer every call with ``status`` and ``document`` as JSON (``orjson.dumps(document)``)."""
    raw = orjson.dumps(document)
    return lambda request, body: web.Response(
        status=status, body=raw, content_type="application/json", headers=headers
    )


# One image entry the upstream refused (Seedream's per-image failure), beside the images it made.
FAILED = {
    "error": {"code": "OutputImageSensitiveContentDetected", "message": "The output image was refused."}
}


def ledger_record(gw: Gateway, request_id: str) -> dict[str, Any]:
    """The one ledger record of ``request_id`` (made moments ago), as the admin export gives it."""
    today = datetime.now(UTC).date()
    days = {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}
    with gw.admin() as admin:
        lines = admin.get("/admin/v1/usage", params={**days, "format": "jsonl"}).text
    found = [r for r in map(orjson.loads, lines.splitlines()) if r.get("request_id") == request_id]
    assert len(found) == 1, lines
    return dict(found[0])


def record_when_written(gw: Gateway, request_id: str) -> dict[str, Any]:
    """The ledger record of ``request_id`` once it is written (a streamed call settles after its
    caller's response began, so the record may trail the response)."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        try:
            found.append(ledger_record(gw, request_id))
        except AssertionError:
            return False
        return True

    wait_until(written, what=f"the ledger record of {request_id}")
    return found[-1]
