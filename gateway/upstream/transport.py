"""What the upstream calls ask of a transport, and what its failures mean.

One operation: :meth:`Transport.post` sends a request to a :class:`Target` (the endpoint and the
headers every call carries, fixed at start) and returns the :class:`Answer` once its status and
headers are in; its body is then read piece by piece (:meth:`Answer.read`), and :meth:`Answer.close`
gives the connection back, or drops it if the answer was not read to its end.

Its failures, for gateway/upstream/client.py to map, are what the ledger must tell apart:

- :class:`ConnectFailed` (and :class:`ConnectTimeout`): no connection, nothing was sent; the
  ``OSError`` is the ``__cause__`` (gateway/upstream/descriptors.py looks for ``EMFILE`` there);
- :class:`Dropped`: the connection ended before an answer's headers: nothing was answered;
- :class:`UnreadableAnswer`: the upstream answered in a way that cannot be read (malformed, over
  the header limits, framed in a way HTTP/1.1 refuses, or cut short in its body). It got the
  call and may bill it, so the call is reconciled.

No retry, no redirect, no read timeout: a POST that may have reached the upstream is never sent
twice, and the callers bound every wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

Headers = list[tuple[bytes, bytes]]  # as received: names in their own case, in order
DEFAULT_PORTS = {"http": 80, "https": 443}


class TransportError(Exception):
    """The call failed below HTTP: see the subclasses for what the upstream got."""


class ConnectFailed(TransportError):
    """No connection could be opened (refused, unreachable, TLS refused, no descriptor left):
    nothing was sent."""


class ConnectTimeout(ConnectFailed):
    """The connection (TLS handshake included) was not open within the connect timeout."""


class Dropped(TransportError):
    """The connection ended before an answer's headers were in: nothing was answered."""


class UnreadableAnswer(TransportError):
    """The upstream answered, in a way that cannot be read: a malformed status line or header,
    a header section over the limits, framing HTTP/1.1 refuses, or a body cut short. It got the
    call (and may bill it)."""


class PoolClosed(TransportError):
    """The transport was closed (the gateway is stopping) while a call wanted a connection."""


def header(headers: Headers, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


@dataclass(frozen=True)
class Target:
    """Where the calls go and the request head they share, built once: per call, only the
    Content-Length and the body are added."""

    url: str
    scheme: str
    host: str
    port: int
    path: bytes  # the request target: path and query
    headers: tuple[tuple[bytes, bytes], ...]  # Host first; no Content-Length
    head: bytes  # "POST <path> HTTP/1.1" and the headers, up to the Content-Length line

    @classmethod
    def of(cls, url: str, headers: list[tuple[str, str]]) -> Target:
        """Refuses a URL that is not http(s) and a header that would break the request's framing."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{url!r}: only http:// and https:// URLs with a host are supported")
        host, port = parts.hostname, parts.port or DEFAULT_PORTS[scheme]
        shown = f"[{host}]" if ":" in host else host
        netloc = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = [(b"Host", netloc.encode("ascii") if netloc.isascii() else netloc.encode("idna"))]
        for name, value in headers:
            raw_name, raw_value = name.encode("ascii"), value.encode("latin-1")
            if any(c in raw_name + raw_value for c in b"\r\n\x00") or not raw_name or b":" in raw_name:
                raise ValueError(f"request header {name!r} would break the request's framing")
            fields.append((raw_name, raw_value))
        lines = [b"POST %s HTTP/1.1\r\n" % path.encode("ascii")]
        lines += [name + b": " + value + b"\r\n" for name, value in fields]
        return cls(url, scheme, host, port, path.encode("ascii"), tuple(fields), b"".join(lines))

    def request(self, body: bytes) -> bytes:
        """The whole request, for one write."""
        return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)


class Answer(Protocol):
    """An answer whose status and headers are in, its body still arriving."""

    status: int
    headers: Headers

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end. Raises :class:`UnreadableAnswer` if the
        body broke off."""
        ...

    def close(self) -> None:
        """Done with it: its connection is reused if the answer ended, else closed."""
        ...


class Transport(Protocol):
    async def post(self, target: Target, body: bytes, connect_timeout_s: float | None) -> Answer:
        """Send the request; the answer once its headers are in (:class:`TransportError` if not)."""
        ...

    async def aclose(self) -> None:
        """Close every connection; calls still waiting for one get :class:`PoolClosed`."""
        ...
