"""A fixed-answer stand-in for the upstream: raw asyncio protocol, httptools parser, uvloop.

Answers every request (any method, any path) with the same small 200 ``ImagesResponse``, shaped
like the simulator's default answer (one ``url`` item plus Seedream's ``usage``), over keep-alive
HTTP/1.1. No routing, no JSON work, no logging: it must never be what limits a benchmark figure.

    python -m bench.fixed_upstream --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import httptools

BODY = (
    b'{"created":1730000000,"data":[{"url":"https://assets.example.com/generated-image.png",'
    b'"size":"1024x1024"}],"usage":{"generated_images":1,"output_tokens":4096,"total_tokens":4096}}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)
) + BODY


DELAY_S = 0.0  # --delay: answer this long after the request (the burst scenario's 20 s upstream)


class FixedAnswer(asyncio.Protocol):
    __slots__ = ("transport", "parser")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # httptools callback: one full request read (body included), answer it.
    def on_message_complete(self) -> None:
        if DELAY_S:
            asyncio.get_running_loop().call_later(DELAY_S, self._answer)
        else:
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedAnswer, host, port, backlog=16384, reuse_address=True)
    print(f"fixed upstream listening on http://{host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    global DELAY_S
    DELAY_S = args.delay
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one socket per connection
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
