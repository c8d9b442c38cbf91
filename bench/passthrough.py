"""The `passthrough` reference: a bare forwarding proxy, aiohttp's server with aiohttp's client.

No auth, no Redis, no metrics, no logging: what forwarding one request costs in Python on this
machine, the ceiling any Python gateway can reach.

    python -m bench.passthrough --port 9102 --upstream http://127.0.0.1:9101
"""

from __future__ import annotations

import argparse
import sys

import aiohttp
from aiohttp import web


def build_app(upstream: str) -> web.Application:
    url = upstream.rstrip("/") + "/v1/images/generations"
    headers = {"authorization": "Bearer passthrough", "content-type": "application/json"}
    app = web.Application()

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=2000, keepalive_timeout=30)
        app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        yield
        await app["session"].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app["session"].post(url, data=body, headers=headers) as reply:
            data = await reply.read()
            return web.Response(body=data, status=reply.status, content_type="application/json")

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/images/generations", forward)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args(argv)
    import uvloop

    web.run_app(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=uvloop.new_event_loop(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
