"""Stand-in upstream channels over real HTTP, and gateways in front of several of them.

Each :class:`StandIn` is a scripted upstream (tests/scripted_upstream.py) on its own port that also
keeps the bodies it was sent, so a test counts the calls each channel received and reads what
reached it. The answers here are the ones channel tests need: images, the upstream's error
envelope with any status, a proxy's HTML page, a wait, a dropped connection, an event stream.
``channels_file`` writes a ``GATEWAY_CHANNELS_FILE`` whose keys come from variables
(``api_key_env``), and ``channel_gateway`` starts a gateway with it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiohttp import web

from tests.scripted_upstream import Answer, ScriptedUpstream, answer_json
from tests.support import TLS, Gateway, free_port, gateway_env, wait_until


@dataclass
class StandIn(ScriptedUpstream):
    """A channel's upstream: answers as scripted, keeps every body it was sent."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    key: str = field(default_factory=lambda: "sk-chan-" + secrets.token_hex(12))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen_authorization.append(request.headers.get("Authorization", ""))
        self.bodies.append(orjson.loads(body))
        assert self.answer is not None, "the test did not script an answer"
        answer = self.answer(request, body)
        return await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[no-any-return]

    @property
    def calls(self) -> int:
        return len(self.seen_authorization)

    def reset(self, answer: Answer | None = None) -> StandIn:
        self.answer = answer
        self.seen_authorization.clear()
        self.bodies.clear()
        return self


def images(count: int = 1, tag: str = "") -> Answer:
    """A 200 with ``count`` image URLs (``tag`` in each, to tell channels apart)."""
    data = [{"url": f"https://images.example/{tag}{i}.png"} for i in range(count)]
    return answer_json(200, {"created": 1730000000, "data": data, "usage": {"generated_images": count}})


def envelope(status: int, code: str = "upstream_error", headers: dict[str, str] | None = None) -> Answer:
    """The upstream's own error envelope with ``status``."""
    return answer_json(
        status, {"error": {"message": f"failed ({status})", "type": "server_error", "code": code}}, headers
    )


def html(status: int) -> Answer:
    """A proxy's page in front of the upstream: no envelope."""
    page = b"<html><body><h1>%d Bad Gateway</h1>nginx</body></html>" % status
    return lambda request, body: web.Response(status=status, body=page, content_type="text/html")


def after(seconds: float, then: Answer) -> Answer:
    """``then``, once ``seconds`` have passed (a slow generation)."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return then(request, body)  # type: ignore[return-value]

    return answer


def dropped() -> Answer:
    """The request is read, then the connection is closed without a word."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(1)
        raise ConnectionResetError("dropped on purpose")

    return answer


def event_stream(count: int, tag: str = "") -> Answer:
    """Seedream's stream: one partial_succeeded per image, completed, [DONE]."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(count):
            event = {
                "type": "image_generation.partial_succeeded",
                "image_index": i,
                "url": f"https://s/{tag}{i}",
            }
            await response.write(
                b"event: image_generation.partial_succeeded\ndata: " + orjson.dumps(event) + b"\n\n"
            )
        done = {"type": "image_generation.completed", "usage": {"generated_images": count}}
        await response.write(b"event: image_generation.completed\ndata: " + orjson.dumps(done) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    return answer


def refused_port() -> str:
    """A loopback URL where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


def channel(name: str, upstream: StandIn | str, **fields: Any) -> dict[str, Any]:
    """One channel of a channels file; its key is read from the variable ``KEY_<NAME>``."""
    url = upstream if isinstance(upstream, str) else upstream.url
    return {"name": name, "base_url": url, "api_key_env": f"KEY_{name.upper().replace('-', '_')}", **fields}


def channels_file(directory: Path, *channels: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "channels.yaml"
    path.write_text(yaml.safe_dump({"channels": list(channels)}, sort_keys=False))
    return path


def key_env(upstreams: dict[str, StandIn | str]) -> dict[str, str]:
    """``KEY_<NAME>`` for each channel: a stand-in's own key, a made-up one for a refused port."""
    return {
        f"KEY_{name.upper().replace('-', '_')}": up.key if isinstance(up, StandIn) else "sk-nobody-" + name
        for name, up in upstreams.items()
    }


@contextmanager
def channel_gateway(
    redis_url: str,
    directory: Path,
    channels: list[dict[str, Any]],
    upstreams: dict[str, StandIn | str],
    wait: bool = True,
    **env: str,
) -> Iterator[Gateway]:
    """A gateway whose channels are ``channels`` (keys from ``upstreams``); ``wait=False`` for
    several started side by side (then ``ready_together``)."""
    path = channels_file(directory, *channels)
    settings = {"GATEWAY_CHANNELS_FILE": str(path), **key_env(upstreams), **env}
    gw = Gateway(
        gateway_env(redis_url, refused_port(), directory / "state", **settings), directory / "gateway.log"
    )
    try:
        yield gw.start(wait_ready=wait)
    finally:
        gw.stop()


def channel_states(gw: Gateway) -> dict[str, dict[str, Any]]:
    """``/readyz``'s channels: name -> state (ready, resting, probation) and rest details."""
    return dict(httpx.get(f"{gw.url}/readyz", verify=TLS, timeout=5).json()["channels"])


def wait_for_state(
    gw: Gateway, name: str, state: str | tuple[str, ...], timeout_s: float = 15
) -> dict[str, Any]:
    """The channel's state once it is ``state`` (or one of them) at ``gw``."""
    wanted = (state,) if isinstance(state, str) else state

    def reached() -> dict[str, Any] | None:
        found = channel_states(gw)[name]
        return found if found["state"] in wanted else None

    what = f"channel {name} {' or '.join(wanted)} at {gw.url}"
    return dict(wait_until(reached, timeout_s=timeout_s, what=what))
