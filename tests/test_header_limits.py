"""Request headers are bounded (GATEWAY_MAX_HEADER_BYTES, 64 KiB by default).

Before the fix one 200 MB header was buffered whole (RSS 101 -> 501 MB) and stalled /healthz.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx

from tests.support import TLS, Gateway

LIMIT = 64 * 1024  # the default


def send_raw(port: int, head: bytes, chunk: int = 64 * 1024) -> bytes:
    """Send ``head`` as a client would and return what the gateway answered before closing.

    Sending stops early if the gateway closes the connection (that is a refusal too).
    """
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:

        def read() -> None:
            try:
                while data := sock.recv(65536):
                    answer.extend(data)
            except OSError:
                pass

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start : start + chunk])
        except OSError:
            pass  # the gateway closed on us mid-send: refused
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        reader.join(timeout=20)
        assert not reader.is_alive(), "the gateway neither answered nor closed the connection"
    return bytes(answer)


def request_with_header(size: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * size + b"\r\nConnection: close\r\n\r\n"


def test_a_1_mb_header_is_refused_with_431_and_healthz_stays_prompt(gateway: Gateway) -> None:
    started = time.monotonic()
    answer = send_raw(gateway.port, request_with_header(1024 * 1024))
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    if answer:
        assert b'"code":"request_header_fields_too_large"' in answer and b"connection: close" in answer
    assert time.monotonic() - started < 10

    started = time.monotonic()
    assert httpx.get(f"{gateway.url}/healthz", timeout=5, verify=TLS).status_code == 200
    assert time.monotonic() - started < 2, "the refused header must not stall other requests"


def test_a_head_just_over_the_bound_in_one_read_is_refused(gateway: Gateway) -> None:
    answer = send_raw(gateway.port, request_with_header(LIMIT), chunk=len(request_with_header(LIMIT)))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_ordinary_and_large_but_allowed_headers_work(gateway: Gateway) -> None:
    answer = send_raw(gateway.port, request_with_header(LIMIT - 1024))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    response = httpx.get(
        f"{gateway.url}/healthz", headers={"X-Trace": "t" * 4000, "Cookie": "c=1"}, timeout=5, verify=TLS
    )
    assert response.status_code == 200
    with httpx.Client(
        base_url=gateway.url, timeout=5, verify=TLS
    ) as client:  # keep-alive: the count restarts
        assert [client.get("/healthz", headers={"X-Pad": "p" * 40_000}).status_code for _ in range(5)] == [
            200
        ] * 5
