"""The public API as a developer with the official OpenAI SDK sees it."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from tests import openai_schema
from tests.support import MODEL, TLS, UPSTREAM_KEY, Gateway, Simulator, generate


def test_sdk_generates_images(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    response = openai_client(key).images.generate(model=MODEL, prompt="a red fox in the snow", n=2, size="2K")
    assert isinstance(response, openai.types.ImagesResponse)
    assert len(response.data) == 2
    assert all(item.url and item.url.startswith("http") for item in response.data)


def test_sdk_b64_images_are_real_pngs(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    response = openai_client(key).images.generate(
        model=MODEL, prompt="a lighthouse", size="64x32", response_format="b64_json"
    )
    png = base64.b64decode(response.data[0].b64_json)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (64, 32)


def test_wrong_key_is_authentication_error(gateway: Gateway, openai_client) -> None:
    for key in ("sk-gw-aaaaaaaaaaaa_" + "x" * 43, "not-a-key", UPSTREAM_KEY):
        with pytest.raises(openai.AuthenticationError) as caught:
            openai_client(key, max_retries=0).images.generate(model=MODEL, prompt="x")
        assert caught.value.body["code"] in ("invalid_api_key", "missing_api_key")
        assert UPSTREAM_KEY not in str(caught.value.body)


def test_unknown_model_is_not_found(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client(key).images.generate(model="dall-e-9", prompt="x")
    assert caught.value.body["code"] == "model_not_found"


def test_bad_input_is_bad_request(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    client = openai_client(key)
    for kwargs in ({"n": 11}, {"size": "0x0"}, {"size": "abc"}, {"prompt": ""}):
        params = {"model": MODEL, "prompt": "x", **kwargs}
        with pytest.raises(openai.BadRequestError):
            client.images.generate(**params)


def test_model_not_allowed_is_permission_denied(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key(models=["doubao-seedream-4-0-250828"])
    with pytest.raises(openai.PermissionDeniedError):
        openai_client(key).images.generate(model=MODEL, prompt="x")


def test_checks_come_in_order_key_body_model_permission(gateway: Gateway) -> None:
    """A bad key beats a bad body; a bad body beats an unknown model; unknown beats forbidden."""
    key, _ = gateway.create_key(models=["doubao-seedream-4-0-250828"])

    def post(token: str, body: dict[str, str]) -> int:
        return generate(gateway, token, **body).status_code

    bad_key = "sk-gw-aaaaaaaaaaaa_" + "y" * 43
    assert post(bad_key, {"model": "nope", "prompt": ""}) == 401
    assert post(key, {"model": "nope", "prompt": ""}) == 400
    assert post(key, {"model": "nope", "prompt": "x"}) == 404
    assert post(key, {"model": MODEL, "prompt": "x"}) == 403


def test_a_limit_of_one_request_per_minute_is_refused_in_the_singular(gateway: Gateway) -> None:
    key, _ = gateway.create_key(rpm=1)
    assert generate(gateway, key).status_code == 200
    refused = generate(gateway, key)
    assert refused.status_code == 429
    assert "limit of 1 request per minute is reached" in refused.json()["error"]["message"]


def test_every_response_has_a_request_id(gateway: Gateway) -> None:
    for response in (
        httpx.get(f"{gateway.url}/healthz", verify=TLS),
        httpx.get(f"{gateway.url}/no/such/route", verify=TLS),
        httpx.post(f"{gateway.url}/v1/images/generations", json={}, verify=TLS),
    ):
        assert response.headers["x-request-id"].startswith("req_")


def test_sdk_sees_request_id(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    raw = openai_client(key).images.with_raw_response.generate(model=MODEL, prompt="x")
    assert raw.request_id and raw.request_id.startswith("req_")


def test_success_error_and_models_validate_against_openai_schema(gateway: Gateway) -> None:
    key, _ = gateway.create_key()
    headers = {"Authorization": f"Bearer {key}"}
    ok = generate(gateway, key)
    assert ok.status_code == 200
    openai_schema.validate_images_response(ok.json())
    for status_call in (
        lambda: httpx.post(
            f"{gateway.url}/v1/images/generations", json={"model": MODEL, "prompt": "x"}, verify=TLS
        ),
        lambda: generate(gateway, key, model="nope"),
        lambda: httpx.get(f"{gateway.url}/v1/nothing-here", verify=TLS),
    ):
        error = status_call()
        assert error.status_code >= 400
        openai_schema.validate_error_response(error.json())
    models = httpx.get(f"{gateway.url}/v1/models", headers=headers, verify=TLS)
    assert models.status_code == 200
    openai_schema.validate_models_list(models.json())


def test_models_lists_only_what_the_key_may_use(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key(models=[MODEL])
    ids = [m.id for m in openai_client(key).models.list()]
    assert ids == [MODEL]
    everything, _ = gateway.create_key()
    assert len(list(openai_client(everything).models.list())) >= 3


def test_stream_is_no_longer_refused(gateway: Gateway) -> None:
    """``"stream": true`` answers server-sent events (tests/test_stream.py has the rest)."""
    key, _ = gateway.create_key()
    response = generate(gateway, key, stream=True, simulator_fault="stream_gap=0", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content.endswith(b"data: [DONE]\n\n")


def test_caller_key_never_reaches_upstream_and_master_key_is_used(
    gateway: Gateway, simulator: Simulator
) -> None:
    key, _ = gateway.create_key()
    marker = "marker-" + key[-8:]
    response = generate(
        gateway,
        key,
        headers={"Cookie": "session=secret-cookie", "X-Custom": "x", "Connection": "keep-alive"},
        prompt=marker,
    )
    assert response.status_code == 200
    seen = [r for r in simulator.requests() if marker.encode() in base64.b64decode(r["body_b64"])]
    assert len(seen) == 1
    headers = {k.lower(): v for k, v in seen[0]["headers"].items()}
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert key not in json.dumps(seen[0])
    assert "cookie" not in headers and "x-custom" not in headers


def test_chinese_prompt_and_extra_fields_arrive_byte_identical(
    gateway: Gateway, simulator: Simulator
) -> None:
    key, _ = gateway.create_key()
    body = (
        '{"model": "%s", "prompt": "一只在雪地里奔跑的柴犬，水彩风格 %s", "seed": 42, "guidance_scale": 2.5,'
        ' "watermark": false, "image": ["https://example.com/a.png"], "output_format": "png"}'
        % (MODEL, key[-6:])
    ).encode("utf-8")
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        content=body,
        verify=TLS,
    )
    assert response.status_code == 200
    bodies = [base64.b64decode(r["body_b64"]) for r in simulator.requests()]
    assert body in bodies


def test_large_b64_response_passes_through_unchanged(gateway: Gateway, simulator: Simulator) -> None:
    key, _ = gateway.create_key()
    request = {"prompt": "big", "response_format": "b64_json", "simulator_fault": "image_bytes=20000000"}
    direct = generate(simulator.url, UPSTREAM_KEY, timeout=60, **request)
    via_gateway = generate(gateway, key, timeout=60, **request)
    assert via_gateway.status_code == 200
    assert len(via_gateway.content) >= 20_000_000
    assert via_gateway.json()["data"][0]["b64_json"] == direct.json()["data"][0]["b64_json"]


def test_master_key_never_in_responses_or_logs(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    client = openai_client(key, max_retries=0)
    client.images.generate(model=MODEL, prompt="x")
    for fault in ("status=401", "status=500", "status=402"):
        with pytest.raises(openai.APIStatusError) as caught:
            client.images.generate(model=MODEL, prompt="x", extra_body={"simulator_fault": fault})
        assert UPSTREAM_KEY not in caught.value.response.text
        assert UPSTREAM_KEY not in str(caught.value.response.headers)
    assert UPSTREAM_KEY not in gateway.metrics()
    assert UPSTREAM_KEY not in gateway.log()


def test_upstream_auth_failure_does_not_look_like_callers_key(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(key, max_retries=0).images.generate(
            model=MODEL, prompt="x", extra_body={"simulator_fault": "status=401"}
        )
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.body["code"] == "upstream_auth_failed"


def test_sdk_retrieves_a_model_like_the_list_and_404s_an_unknown_one(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key(models=[MODEL])
    client = openai_client(key, max_retries=0)
    model = client.models.retrieve(MODEL)
    assert model == next(m for m in client.models.list() if m.id == MODEL)
    other = next(m for m in ("doubao-seedream-4-0-250828", "doubao-seedream-5-0-260128") if m != MODEL)
    for missing in ("dall-e-9", other):  # unknown; known but not this key's
        with pytest.raises(openai.NotFoundError) as raised:
            client.models.retrieve(missing)
        assert raised.value.code == "model_not_found" and missing in raised.value.message


def test_sdk_edits_and_variations_point_to_image_to_image(gateway: Gateway, openai_client) -> None:
    key, _ = gateway.create_key()
    client = openai_client(key, max_retries=0)
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    calls = [
        lambda: client.images.edit(image=("a.png", png), prompt="add a hat", model=MODEL),
        lambda: client.images.create_variation(image=("a.png", png), model=MODEL),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as raised:
            call()
        assert raised.value.code == "unsupported_endpoint"
        assert "'image' field" in raised.value.message and "/v1/images/generations" in raised.value.message
