"""Bad input: a clear 4xx in the OpenAI envelope, never the upstream, never a charge, never a 500.

Malformed headers are sent through raw sockets: httpx refuses NUL bytes and trailing spaces, so
a test through it would never reach the server with them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.fault_tools import (
    PRICE,
    assert_envelope,
    parse_raw_response,
    raw_http,
    spent,
)
from tests.support import ADMIN_TOKEN, GENERATIONS, MODEL, TLS, UPSTREAM_KEY, Gateway, Simulator, metric_value

TEAM = "bad-input"
VALID = {"model": MODEL, "prompt": "a valid prompt"}


@pytest.fixture(scope="module")
def team_key(gateway: Gateway) -> tuple[str, str]:
    return gateway.create_key(team=TEAM, budget_usd="10", budget_period="total")


@pytest.fixture
def untouched(gateway: Gateway, simulator: Simulator, team_key: tuple[str, str]) -> Iterator[str]:
    """The team key; after the test, nothing reached the upstream and nothing was charged."""
    key, key_id = team_key
    before = simulator.count()
    yield key
    assert simulator.count() == before, "a bad request reached the upstream"
    usage = gateway.usage(key_id)  # one read for both: this runs after each of ~85 tests
    assert Decimal(usage["spent_usd"]) == 0 and Decimal(usage["reserved_usd"]) == 0


def post(
    gateway: Gateway,
    key: str | None,
    content: bytes,
    content_type: str | None = "application/json",
    **headers: str,
) -> httpx.Response:
    sent = dict(headers)
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if content_type is not None:
        sent["Content-Type"] = content_type
    return httpx.post(gateway.url + GENERATIONS, content=content, headers=sent, timeout=60, verify=TLS)


def body(**fields: Any) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


def without(name: str) -> bytes:
    return json.dumps({k: v for k, v in VALID.items() if k != name}).encode()


def raw_post(gateway: Gateway, headers: bytes, content: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    request = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        + b"Content-Type: application/json\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n" % len(content)
        + content
    )
    return parse_raw_response(raw_http(gateway.port, request))


MALFORMED_BODIES = {
    "cut-off JSON": b'{"model": "m", "prompt": ',
    "trailing garbage": body() + b" and more",
    "a JSON array": b"[]",
    "a JSON string": b'"draw a cat"',
    "JSON null": b"null",
    "empty body": b"",
    "invalid UTF-8": b'{"model": "%s", "prompt": "\xff\xfe"}' % MODEL.encode(),
    "a byte-order mark": b"\xef\xbb\xbf" + body(),
    "NaN": body()[:-1] + b', "n": NaN}',
    "raw CR LF inside a string": b'{"model": "%s", "prompt": "a\r\nb"}' % MODEL.encode(),
    "nesting deeper than 1024": body()[:-1] + b', "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
}


@pytest.mark.parametrize("content", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_json_is_400(gateway: Gateway, untouched: str, content: bytes) -> None:
    assert_envelope(post(gateway, untouched, content), 400, None, retry=False)


BAD_FIELDS = {
    "prompt missing": (without("prompt"), "prompt"),
    "prompt empty": (body(prompt=""), "prompt"),
    "prompt blank": (body(prompt=" \t\n "), "prompt"),
    "prompt null": (body(prompt=None), "prompt"),
    "prompt a number": (body(prompt=42), "prompt"),
    "prompt a list": (body(prompt=["a", "b"]), "prompt"),
    "prompt an object": (body(prompt={"text": "a"}), "prompt"),
    "prompt over 32000 characters": (body(prompt="x" * 32_001), "prompt"),
    "model missing": (without("model"), "model"),
    "model empty": (body(model=""), "model"),
    "model a number": (body(model=4), "model"),
    **{f"n {v!r}": (body(n=v), "n") for v in (0, -1, 11, 1.5, "2", True, 100.0, [1], 2**70)},
    **{
        f"size {v!r}": (body(size=v), "size")
        for v in (
            "0x0",
            "99999x99999",
            "abc",
            "",
            "1024x",
            "x1024",
            "1024*1024",
            "-1x-1",
            "1024x1024 ",
            "16385x1024",
            "5K",
            1024,
            ["1024x1024"],
        )
    },
    "response_format xml": (body(response_format="xml"), "response_format"),
    "response_format a number": (body(response_format=1), "response_format"),
    "stream a string": (body(stream="yes"), "stream"),
    **{
        f"user {name}": (body(user=value), "user")
        for name, value in {
            "over 256 characters": "u" * 257,
            "with a newline": "alice\n",
            "with a NUL": "a\x00",
            "with a unit separator": "a\x1f",
            "with a C1 control": "a\x9b",
            "a number": 5,
            "a list": ["alice"],
            "an object": {},
            "false": False,
        }.items()
    },
    "sequential mode unknown": (body(sequential_image_generation="yes"), "sequential_image_generation"),
    **{
        f"max_images {v!r}": (
            body(sequential_image_generation="auto", sequential_image_generation_options={"max_images": v}),
            "sequential_image_generation_options",
        )
        for v in (0, 16, "3", 2.5, True)
    },
    "sequential options a list": (
        body(sequential_image_generation="auto", sequential_image_generation_options=[1]),
        "sequential_image_generation_options",
    ),
}


@pytest.mark.parametrize(("content", "param"), BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_bad_field_is_400_naming_the_parameter(
    gateway: Gateway, untouched: str, content: bytes, param: str
) -> None:
    error = assert_envelope(post(gateway, untouched, content), 400, None, retry=False)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/xml",
        "json",
    ],
)
def test_wrong_content_type_is_415(gateway: Gateway, untouched: str, content_type: str | None) -> None:
    response = post(gateway, untouched, body(), content_type=content_type)
    assert_envelope(response, 415, "unsupported_media_type", retry=False)


def test_ten_megabyte_prompt_is_413(gateway: Gateway, untouched: str) -> None:
    response = post(gateway, untouched, body(prompt="p" * 10_000_000))
    error = assert_envelope(response, 413, "request_too_large", retry=False)
    assert "larger than" in error["message"]


def test_huge_body_without_content_length_is_413(gateway: Gateway, untouched: str) -> None:
    """Chunked, so the size is known only while reading: the limit holds while streaming."""

    def chunks() -> Iterator[bytes]:
        yield body()[:-1] + b', "padding": "'
        for _ in range(12):
            yield b"x" * 1_000_000
        yield b'"}'

    response = httpx.post(
        gateway.url + GENERATIONS,
        content=chunks(),
        headers={"Authorization": f"Bearer {untouched}", "Content-Type": "application/json"},
        timeout=60,
        verify=TLS,
    )
    assert_envelope(response, 413, "request_too_large", retry=False)


def test_declared_huge_body_is_refused_before_it_is_sent(gateway: Gateway, untouched: str) -> None:
    request = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        + b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % untouched.encode()
        + b"Content-Length: 10000000000\r\n\r\n{"
    )
    status, _, content = parse_raw_response(raw_http(gateway.port, request))
    assert status == 413
    assert json.loads(content)["error"]["code"] == "request_too_large"


def test_unknown_fields_of_every_type_pass_through_unchanged(gateway: Gateway, simulator: Simulator) -> None:
    """Not errors: the upstream has fields the gateway does not know, and gets them as sent."""
    key, key_id = gateway.create_key(team=TEAM, budget_usd="10", budget_period="total")
    nested: Any = "leaf"
    for _ in range(50):
        nested = {"level": nested}
    extras = {
        "a_string": "文字 \u2028 \\ \" ' <script>",
        "an_int": 7,
        "a_negative": -3,
        "a_float": 2.5e-7,
        "a_big_int": 123456789012345678901234567890,
        "a_true": True,
        "a_false": False,
        "a_null": None,
        "an_empty_list": [],
        "a_mixed_list": [1, "two", None, {"three": [3.0]}],
        "an_object": {"seed": 42, "guidance_scale": 2.5},
        "a_deep_object": nested,
        "键": "值",
        "": "empty key",
        "k" * 1000: "a long key",
        "user": "someone@example.com",
        "quality": "hd",
        "style": "vivid",
    }
    content = json.dumps(
        {**VALID, "prompt": f"unknown fields {key_id}", **extras}, ensure_ascii=False
    ).encode()
    response = post(gateway, key, content)
    assert response.status_code == 200, response.text
    forwarded = [base64.b64decode(r["body_b64"]) for r in simulator.requests()]
    assert content in forwarded, "the upstream must get the caller's bytes unchanged"
    assert spent(gateway, key_id) == PRICE


# -- Authorization -----------------------------------------------------------------------------


def _wrong_keys(valid: str) -> dict[str, tuple[bytes, str]]:
    """Authorization header lines (raw, sent as is) and the error code each must get."""
    return {
        "no header": (b"", "missing_api_key"),
        "empty value": (b"Authorization: \r\n", "missing_api_key"),
        "scheme only": (b"Authorization: Bearer\r\n", "invalid_api_key"),
        "scheme and spaces": (b"Authorization: Bearer    \r\n", "invalid_api_key"),
        "basic auth": (b"Authorization: Basic dXNlcjpwYXNz\r\n", "invalid_api_key"),
        "no scheme": (b"Authorization: %s\r\n" % valid.encode(), "invalid_api_key"),
        "tab for a space": (b"Authorization: Bearer\t%s\r\n" % valid.encode(), "invalid_api_key"),
        "not a gateway key": (b"Authorization: Bearer sk-proj-abcdefghijklmnop\r\n", "invalid_api_key"),
        "unknown key id": (b"Authorization: Bearer sk-gw-aaaaaaaaaaaa_%s\r\n" % b"A" * 43, "invalid_api_key"),
        "last character changed": (
            b"Authorization: Bearer %s\r\n" % (valid[:-1] + ("A" if valid[-1] != "A" else "B")).encode(),
            "invalid_api_key",
        ),
        "key cut short": (b"Authorization: Bearer %s\r\n" % valid[:-10].encode(), "invalid_api_key"),
        "non-ASCII byte": (b"Authorization: Bearer %s\xff\r\n" % valid[:-1].encode(), "invalid_api_key"),
        # 60 kB: under GATEWAY_MAX_HEADER_BYTES (64 KiB); a longer head is 431 (test_header_limits.py)
        "60 kB of key": (b"Authorization: Bearer " + b"k" * 60_000 + b"\r\n", "invalid_api_key"),
        "the master key": (b"Authorization: Bearer %s\r\n" % UPSTREAM_KEY.encode(), "invalid_api_key"),
        "the admin token": (b"Authorization: Bearer %s\r\n" % ADMIN_TOKEN.encode(), "invalid_api_key"),
    }


def test_missing_empty_and_malformed_authorization_is_401(gateway: Gateway, untouched: str) -> None:
    for name, (header, code) in _wrong_keys(untouched).items():
        status, headers, content = raw_post(gateway, header, body())
        assert status == 401, (name, status, content[:200])
        error = json.loads(content)["error"]
        assert error["code"] == code, name
        assert ("x-should-retry", "false") in headers, name
        for secret in (UPSTREAM_KEY, ADMIN_TOKEN, untouched):
            assert secret.encode() not in content, f"{name}: a secret was echoed"
            assert all(secret not in value for _, value in headers), name


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer KEY\x00\r\n",
        b"Authorization: Bearer KEY\rX-Admin: 1\r\n",
        b"Authorization: Bearer KEY\nX-Admin: 1\r\n",
        b"Authorization: Bearer\r\n KEY\r\n",
    ],
    ids=["NUL byte", "bare CR", "bare LF", "folded line"],
)
def test_unparseable_header_bytes_are_refused_by_the_http_parser(
    gateway: Gateway, untouched: str, header: bytes
) -> None:
    """Not HTTP at all: uvicorn's parser answers 400 before the app (or the upstream) sees it."""
    status, _, content = raw_post(gateway, header.replace(b"KEY", untouched.encode()), body())
    assert status == 400
    assert untouched.encode() not in content


# -- header injection --------------------------------------------------------------------------


def _header_names(headers: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in headers]


def test_crlf_in_header_values_injects_nothing_into_the_response(
    gateway: Gateway, team_key: tuple[str, str]
) -> None:
    key, _ = gateway.create_key(team=TEAM)
    auth = b"Authorization: Bearer %s\r\n" % key.encode()
    attempts = [
        b"Idempotency-Key: inj-%s\r\nSet-Cookie: pwned=1\r\n" % key[-6:].encode(),
        b"X-Request-Id: evil\r\nX-Request-Id: evil2\r\n",
        b"X-Forwarded-For: 1.2.3.4\r\nLocation: https://evil.example\r\n",
    ]
    for attempt in attempts:
        status, headers, content = raw_post(gateway, auth + attempt, body())
        assert status == 200, content[:200]
        names = _header_names(headers)
        assert "set-cookie" not in names and "location" not in names
        assert names.count("x-request-id") == 1
        assert dict(headers)["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt", "a\r\nSet-Cookie: pwned=1\r\n\r\n<html>"), ("model", "m\r\nSet-Cookie: pwned=1")],
)
def test_crlf_in_body_values_stays_in_the_body(gateway: Gateway, field: str, value: str) -> None:
    key, _ = gateway.create_key(team=TEAM)
    status, headers, content = raw_post(
        gateway, b"Authorization: Bearer %s\r\n" % key.encode(), json.dumps({**VALID, field: value}).encode()
    )
    assert status in (200, 404), content[:200]  # the odd prompt is valid; the odd model unknown
    assert "set-cookie" not in _header_names(headers)
    assert all("pwned" not in v for _, v in headers)


@pytest.mark.parametrize("idempotency_key", [b"", b"k" * 256])
def test_invalid_idempotency_key_is_400(gateway: Gateway, untouched: str, idempotency_key: bytes) -> None:
    status, headers, content = raw_post(
        gateway,
        b"Authorization: Bearer %s\r\nIdempotency-Key: %s\r\n" % (untouched.encode(), idempotency_key),
        body(),
    )
    assert status == 400
    assert json.loads(content)["error"]["code"] == "invalid_idempotency_key"


def test_no_bad_input_produced_a_server_error(gateway: Gateway, team_key: tuple[str, str]) -> None:
    """Whatever this module sent, the gateway never answered this team with a 5xx."""
    text = gateway.metrics()
    answered = metric_value(text, "gateway_requests_total", team=TEAM)
    assert answered > 50
    server_errors = sum(
        metric_value(text, "gateway_requests_total", team=TEAM, status=str(s)) for s in range(500, 600)
    )
    assert server_errors == 0
