"""Property tests, in-process: the request validator and the usage rewrite of response bodies.

The validator runs on every call and sees anything a caller can send: random JSON must only ever
give a 400 (never another exception, which would be a 500), valid requests must pass, and what
the documented schema calls valid the validator must accept. The usage rewrite touches bodies of
many megabytes without parsing them twice: everything outside ``usage`` must stay byte-identical.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.call.openai_compat import complete_usage, conform_images_body, top_level_value_span
from gateway.call.validate import (
    MAX_N,
    MAX_SEQUENTIAL_IMAGES,
    MAX_SIDE,
    MAX_USER_CHARS,
    ImageCall,
    ImageGenerationRequest,
    validate_image_request,
)
from gateway.core.errors import GatewayError

MAX_PROMPT = 32_000
FIELDS = [
    "model",
    "prompt",
    "n",
    "size",
    "response_format",
    "stream",
    "sequential_image_generation",
    "sequential_image_generation_options",
    "user",
]
SCHEMA = ImageGenerationRequest.model_json_schema()


@functools.cache
def schema_validator() -> Any:
    """What ``jsonschema.validate(payload, SCHEMA)`` uses, built once: it checks the schema itself
    again on every call (14 ms, most of these tests' time)."""
    validator = jsonschema.validators.validator_for(SCHEMA)
    validator.check_schema(SCHEMA)
    return validator(SCHEMA)


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
plausible = {
    "model": st.sampled_from(["doubao-seedream-4-5-251128", "", "x"]) | json_values,
    "prompt": st.sampled_from(["a cat", "", "   ", "x" * (MAX_PROMPT + 1)]) | json_values,
    "n": st.integers(-2, MAX_N + 2) | st.sampled_from([1.0, 1.5, "2", True, None]) | json_values,
    "size": st.sampled_from(["1024x1024", "2K", "2k", "0x0", "99999x99999", "abc", "16384x1"]) | json_values,
    "response_format": st.sampled_from(["url", "b64_json", "xml"]) | json_values,
    "stream": st.sampled_from([True, False, None]) | json_values,
    "sequential_image_generation": st.sampled_from(["auto", "disabled", "yes"]) | json_values,
    "sequential_image_generation_options": st.fixed_dictionaries(
        {}, optional={"max_images": st.integers(-1, MAX_SEQUENTIAL_IMAGES + 1) | json_values}
    )
    | json_values,
    "user": st.sampled_from(["alice", "", "a\n", "a\x85", "u" * 257]) | st.text(max_size=300) | json_values,
}
request_like = st.fixed_dictionaries({}, optional=plausible).flatmap(
    lambda known: st.dictionaries(st.text(max_size=10), json_values, max_size=3).map(
        lambda extra: {**extra, **known}
    )
)


def _validate(payload: Any) -> ImageCall | GatewayError:
    try:
        return validate_image_request(payload, MAX_PROMPT)
    except GatewayError as error:
        return error


@FAST
@given(st.one_of(json_values, request_like))
def test_any_json_is_accepted_or_refused_with_a_400(payload: Any) -> None:
    result = _validate(payload)
    if isinstance(result, GatewayError):
        assert result.status == 400
        assert result.retry is False
        assert result.param is None or result.param in FIELDS
    else:
        assert 1 <= result.n <= MAX_N and result.n <= result.max_images <= MAX_SEQUENTIAL_IMAGES


def _has_integral_float(payload: dict[str, Any]) -> bool:
    """JSON Schema counts 4.0 as an integer; the gateway (and the upstream) want it written 4."""
    options = payload.get("sequential_image_generation_options")
    max_images = options.get("max_images") if isinstance(options, dict) else None
    return isinstance(payload.get("n"), float) or isinstance(max_images, float)


sides = st.integers(1, MAX_SIDE)
valid_requests = st.fixed_dictionaries(
    {
        "model": st.text(min_size=1),
        "prompt": st.text(max_size=200).map(lambda t: t + "x").filter(lambda t: len(t) <= MAX_PROMPT),
    },
    optional={
        "n": st.none() | st.integers(1, MAX_N),
        "size": st.none()
        | st.sampled_from(["1K", "2K", "3K", "4K", "1k", "4k"])
        | st.builds(lambda w, h: f"{w}x{h}", sides, sides),
        "response_format": st.sampled_from([None, "url", "b64_json"]),
        "stream": st.sampled_from([None, False, True]),
        "sequential_image_generation": st.sampled_from([None, "disabled", "auto"]),
        "sequential_image_generation_options": st.none()
        | st.fixed_dictionaries({}, optional={"max_images": st.integers(1, MAX_SEQUENTIAL_IMAGES)}),
        "seed": json_values,
        "watermark": st.booleans(),
        "user": st.none() | st.text(st.characters(blacklist_categories=["Cc"]), max_size=MAX_USER_CHARS),
    },
)


@FAST
@given(valid_requests)
def test_valid_requests_are_accepted_and_reserve_what_they_may_return(payload: dict[str, Any]) -> None:
    schema_validator().validate(payload)  # the documented schema agrees they are valid
    call = validate_image_request(payload, MAX_PROMPT)
    n = payload.get("n") or 1
    assert (call.model, call.n, call.user) == (payload["model"], n, payload.get("user") or "")
    if payload.get("sequential_image_generation") == "auto":
        options = payload.get("sequential_image_generation_options") or {}
        assert call.max_images == max(n, options.get("max_images", MAX_SEQUENTIAL_IMAGES))
    else:
        assert call.max_images == n


one_change = st.sampled_from(FIELDS).flatmap(lambda name: plausible[name].map(lambda value: (name, value)))
near_valid = st.tuples(valid_requests, st.lists(one_change, max_size=2)).map(
    lambda case: {**case[0], **dict(case[1])}
)


@FAST
@given(near_valid)
def test_what_the_documented_schema_calls_valid_is_accepted(payload: dict[str, Any]) -> None:
    """The schema in /docs is no looser than the validator: a body it allows is not refused."""
    if _has_integral_float(payload) or not schema_validator().is_valid(payload):
        return
    result = _validate(payload)
    assert isinstance(result, ImageCall), (payload, result)


# -- the usage rewrite ------------------------------------------------------------------------

# Keys that make the scanner's job hard: "usage" nested deeper, quotes, escapes, braces.
tricky_keys = st.sampled_from(
    ["usage", "data", 'u"sage', "us\\age", "{usage}", "[", "\u00fcsage", ""]
) | st.text(max_size=6)
tricky_values = st.recursive(
    scalars | st.sampled_from(['"usage": {', "\\", '\\"', "}]", '{"usage": 1}']),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_keys, inner, max_size=3),
    max_leaves=15,
)
usage_values = (
    st.fixed_dictionaries(
        {},
        optional={
            "generated_images": st.integers(0, 15),
            "output_tokens": st.integers(0, 10**6) | tricky_values,
            "total_tokens": st.integers(0, 10**6) | tricky_values,
            "input_tokens": st.integers(0, 10**6) | tricky_values,
            "input_tokens_details": tricky_values,
            "output_tokens_details": tricky_values,
        },
    )
    | tricky_values
)
bodies = st.tuples(
    st.dictionaries(tricky_keys.filter(lambda k: k != "usage"), tricky_values, max_size=4),
    usage_values,
    st.integers(0, 4),
    st.sampled_from(["orjson", "compact", "spaced", "indented", "ascii"]),
)


def _serialise(document: dict[str, Any], style: str) -> bytes:
    if style == "orjson":
        return orjson.dumps(document)
    if style == "compact":
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    if style == "indented":
        return json.dumps(document, indent=2, ensure_ascii=False).encode()
    if style == "ascii":
        return json.dumps(document).encode()
    return json.dumps(document, separators=(" , ", " : "), ensure_ascii=False).encode()


@settings(max_examples=500, deadline=None)
@given(bodies)
def test_usage_rewrite_keeps_every_other_byte(case: tuple[dict[str, Any], Any, int, str]) -> None:
    members, usage, position, style = case
    items = list(members.items())
    items.insert(min(position, len(items)), ("usage", usage))
    body = _serialise(dict(items), style)
    payload = orjson.loads(body)

    span = top_level_value_span(body, b"usage")
    assert span is not None
    start, end = span
    assert orjson.loads(body[start:end]) == payload["usage"]

    result = conform_images_body(body, payload)
    if payload["usage"] is None or _conforms(payload["usage"]):
        assert result == body
        return
    assert orjson.loads(result) == {**payload, "usage": complete_usage(payload["usage"])}
    assert _conforms(orjson.loads(result)["usage"])
    assert result[:start] == body[:start]
    assert result[start + len(result) - len(body) + (end - start) :] == body[end:]


@pytest.mark.parametrize(
    "body",
    [
        # The usage text also inside a member name (an escaped quote before it): found first,
        # refused by the check, and the structural walk rewrites the real one.
        b'{"x\\"usage":{"generated_images":1},"data":[],"usage":{"generated_images":1}}',
        # The same member twice: the last one counts (orjson), so the first is not it.
        b'{"usage":{"generated_images":1},"data":[],"usage":{"generated_images":1}}',
        b'{"data":[],"usage": {"generated_images": 1, "output_tokens": 4}}',  # Python's separators
    ],
)
def test_a_usage_found_by_its_text_is_rewritten_only_where_it_counts(body: bytes) -> None:
    payload = orjson.loads(body)
    start = body.index(b"{", body.rindex(b'"usage"'))  # the last usage member's (flat) value
    end = body.index(b"}", start) + 1
    completed = orjson.dumps(complete_usage(payload["usage"]))
    assert conform_images_body(body, payload) == body[:start] + completed + body[end:]


def _conforms(usage: Any) -> bool:
    """OpenAI's ImagesResponse.usage: three integer counts and the input token details."""
    details = usage.get("input_tokens_details") if isinstance(usage, dict) else None
    return (
        isinstance(details, dict)
        and all(type(usage.get(k)) is int for k in ("input_tokens", "output_tokens", "total_tokens"))
        and all(type(details.get(k)) is int for k in ("text_tokens", "image_tokens"))
    )


@given(st.dictionaries(tricky_keys.filter(lambda k: k != "usage"), tricky_values, max_size=4))
@settings(max_examples=200, deadline=None)
def test_no_top_level_usage_means_no_span_and_no_change(members: dict[str, Any]) -> None:
    body = orjson.dumps(members)
    assert top_level_value_span(body, b"usage") is None
    assert conform_images_body(body, orjson.loads(body)) == body
