"""A hostile stand-in for the upstream, over real HTTP: each test scripts the answers it needs.

The simulator plays an honest Seedream; this one plays what an upstream must not be trusted with:
echoing our Authorization header into any field, per-image failures with a ``usage`` that
disagrees, oversized headers. It records the Authorization header it was sent, as the real
upstream would see it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support import free_port

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
