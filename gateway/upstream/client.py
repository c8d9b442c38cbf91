"""The one upstream client: the master key, explicit deadlines, and what each failure means.

It speaks to the upstream through a transport of gateway/upstream/transport.py's API (the
gateway's own HTTP/1.1 one, gateway/upstream/http1/, unless a test gives another) and hands back an
:class:`UpstreamReply` (gateway/upstream/reply.py), or raises :class:`UpstreamFailure` when no
answer came: a timeout, a connection that failed or dropped, or an answer that came but cannot be
read (which the upstream may bill, so it is reconciled). gateway/upstream/failures.py turns those
and the upstream's error answers into what the caller reads.

Every wait is bounded here: ``asyncio.timeout_at`` of the call's deadline for a generation, the
headers' timeout for a stream (gateway/call/stream.py bounds the rest); the transport applies only
the connect timeout. Nothing is retried: a POST that may have reached the upstream is never sent
twice.
"""

from __future__ import annotations

import asyncio
import time

from gateway import __version__
from gateway.core.secret_mask import Secrets
from gateway.upstream import descriptors
from gateway.upstream.failures import (
    UpstreamFailure,
    bad_response_error,
    timeout_error,
    too_large_error,
    unavailable_error,
)
from gateway.upstream.http1 import H1Transport
from gateway.upstream.reply import BodyFailure, UpstreamReply
from gateway.upstream.transport import (
    Answer,
    ConnectFailed,
    ConnectTimeout,
    PoolClosed,
    Target,
    Transport,
    TransportError,
    UnreadableAnswer,
)

# An answer up to this size is read whole and answered with the cost headers; a larger 200 is
# streamed to the caller as it arrives. 1 MiB holds any URL answer (15 signed URLs are ~10 KB)
# and a 1K base64 image, while 2,000 calls in flight x ~3 copies stays within a few GB only in
# the worst case of all of them being just under it.
BUFFERED_ANSWER_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024  # the most of an answer held unread per connection
KEEPALIVE_S = 30.0  # an idle upstream connection is closed after this long


class UpstreamClient:
    """Forwards image calls to the upstream with the master key, and nothing of the caller's."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout_s: float,
        connect_timeout_s: float = 5.0,
        max_connections: int = 2000,
        max_response_bytes: int = 1536 * 1024 * 1024,
        transport: Transport | None = None,
        mask: Secrets | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_response_bytes = max_response_bytes
        self._api_key = api_key
        # Masked in whatever the upstream answers, however JSON spells them: its key, or every
        # channel's (``mask``, built once for all of them: gateway/upstream/routing.py).
        self.mask = Secrets((api_key,)) if mask is None else mask
        if transport is None:
            transport = H1Transport(max_connections, KEEPALIVE_S, read_buffer_bytes=READ_CHUNK_BYTES)
        self.transport = transport
        # The request head is built once: per call only the body and its length are added. The
        # generations call accepts the encodings httpx's client offered (the reply decodes them);
        # a stream is asked for as it comes, to be relayed byte for byte.
        common = [
            ("Accept", "application/json"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "keep-alive"),
            ("User-Agent", f"image-gateway/{__version__}"),
            ("Authorization", f"Bearer {api_key}"),
            ("Content-Type", "application/json"),
        ]
        self._target = Target.of(url, common)
        streams = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        self._stream_target = Target.of(url, [(name, streams.get(name, value)) for name, value in common])

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def generate(self, body: bytes, deadline: float | None = None) -> UpstreamReply:
        """POST the caller's body unchanged; raise :class:`UpstreamFailure` if no answer came.

        The answer is read in pieces, never past :attr:`max_response_bytes` (a declared
        Content-Length over it is refused before reading). A 200 larger than
        :data:`BUFFERED_ANSWER_BYTES` comes back not ``whole``, its beginning in ``body``, to be
        read on and closed by the caller. Other statuses keep only their first MiB: an error
        envelope is small. ``deadline`` (the loop's clock): the call's, when it began before this
        request (a call that tried another channel first); else now plus the timeout.
        """
        started = time.perf_counter()
        deadline = self._deadline(deadline)
        answer: Answer | None = None
        try:
            async with asyncio.timeout_at(deadline):
                answer = await self._send(self._target, body)
                try:
                    return await self._read(answer, started, deadline)
                except BaseException:
                    answer.close()
                    raise
        except UpstreamFailure as failure:  # its body could not be read whole: it did answer
            failure.status = answer.status if answer is not None else None
            raise
        except (TransportError, OSError, TimeoutError) as exc:
            status = answer.status if answer is not None else None
            raise _failure(exc, self.timeout_s, started, status) from None

    async def _read(self, answer: Answer, started: float, deadline: float) -> UpstreamReply:
        declared = _declared_length(answer)
        if declared > self.max_response_bytes:
            raise UpstreamFailure("too_large", too_large_error(self.max_response_bytes), _since(started))
        reply = UpstreamReply(answer, 0.0, self.max_response_bytes, deadline)
        head = bytearray()
        try:
            while chunk := await reply.next_piece():
                head += chunk
                if len(head) > BUFFERED_ANSWER_BYTES:
                    if reply.status != 200:
                        break  # an error body this long is not an envelope worth reading further
                    reply.body, reply.latency_s = bytes(head), _since(started)
                    return reply
        except BodyFailure as failure:
            if failure.reason == "too_large":
                error = too_large_error(self.max_response_bytes)
                raise UpstreamFailure("too_large", error, _since(started)) from None
            raise UpstreamFailure("bad_response", bad_response_error(), _since(started), True) from None
        await reply.aclose()
        reply.body, reply.whole, reply.latency_s = bytes(head), True, _since(started)
        return reply

    # -- "stream": true (the relay is gateway/call/stream.py) ------------------------------------

    async def open_stream(
        self, body: bytes, headers_timeout_s: float, deadline: float | None = None
    ) -> UpstreamReply:
        """POST the caller's body and return once the upstream's status and headers are in:
        a 200's body still unread (the caller reads it within the call's deadline and closes
        it), another status's error body read; :class:`UpstreamFailure` if none came."""
        started = time.perf_counter()
        deadline = self._deadline(deadline)
        try:
            async with asyncio.timeout(headers_timeout_s):
                answer = await self._send(self._stream_target, body)
        except (TransportError, OSError, TimeoutError) as exc:
            raise _failure(exc, headers_timeout_s, started) from None
        reply = UpstreamReply(answer, _since(started), self.max_response_bytes, deadline, decode=False)
        if reply.status != 200:
            reply.body = await _error_body(reply, headers_timeout_s)
            reply.whole, reply.latency_s = True, _since(started)
        return reply

    def _deadline(self, deadline: float | None) -> float:
        return asyncio.get_running_loop().time() + self.timeout_s if deadline is None else deadline

    async def _send(self, target: Target, body: bytes) -> Answer:
        """Send; with no file descriptor left to connect with, wait for one (nothing was sent,
        so trying again is safe; gateway/upstream/descriptors.py). The caller's deadline bounds the wait."""
        backoff = descriptors.Backoff()
        while True:
            try:
                return await self.transport.post(target, body, self.connect_timeout_s)
            except (TransportError, OSError) as exc:
                if not descriptors.exhausted(exc):
                    raise
            await backoff.wait()

    def redact(self, text: str) -> str:
        """Remove every channel's key from text that came from the upstream (decoded, if it was
        JSON), just in case it echoes."""
        return self.mask.redact(text)

    def redact_bytes(self, body: bytes) -> bytes:
        """The same for a body relayed as it came, in every spelling a JSON parser would decode
        back to a key (gateway/core/secret_mask.py); a copy only if a key is in it."""
        return self.mask.mask(body)


async def _error_body(reply: UpstreamReply, timeout_s: float) -> bytes:
    """The first MiB of an error answer; what could not be read is left out (the status decides
    the mapping, the body only adds its message)."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            while size <= BUFFERED_ANSWER_BYTES and (chunk := await reply.next_piece()):
                chunks.append(chunk)
                size += len(chunk)
    except (TimeoutError, BodyFailure):
        pass
    finally:
        await reply.aclose()
    return b"".join(chunks)[:BUFFERED_ANSWER_BYTES]


def _failure(
    exc: BaseException, timeout_s: float, started: float, status: int | None = None
) -> UpstreamFailure:
    """What a call that got no answer means: failures before the request was written are not
    ``sent`` (another channel may be tried); after it, the upstream may have made and billed the
    images, so the call is reconciled and never sent again."""
    if isinstance(exc, ConnectTimeout):
        return UpstreamFailure("timeout", timeout_error(timeout_s), _since(started), sent=False)
    if isinstance(exc, ConnectFailed | PoolClosed):
        return UpstreamFailure("connect", unavailable_error(), _since(started), sent=False)
    # Sent: the upstream may have made and billed the images. A status that arrived before the
    # body stopped or broke is kept (a stalled 200 especially).
    if isinstance(exc, TimeoutError):  # waiting for the answer, or its body
        return UpstreamFailure("timeout", timeout_error(timeout_s), _since(started), True, status)
    if isinstance(exc, UnreadableAnswer):  # it answered, in a way that cannot be read: it may bill
        return UpstreamFailure("bad_response", bad_response_error(), _since(started), True, status)
    # Dropped after sending.
    return UpstreamFailure("connect", unavailable_error(), _since(started), True, status)


def _declared_length(answer: Answer) -> int:
    for name, value in answer.headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else -1
    return -1


def _since(started: float) -> float:
    return time.perf_counter() - started
