"""The simulator's ``"stream": true`` answers: server-sent events as the upstream contract shows
them, read over real HTTP byte by byte, with the faults that break or stall a stream, and read by
the official ``openai`` SDK to prove the shapes are ones it iterates.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.support import TLS, openai_sdk
from tests.test_simulator import API_KEY, GENERATIONS, Simulator, jpeg_size, png_size, start_simulator

MODEL = "doubao-seedream-4-0-250828"
SUCCEEDED = "image_generation.partial_succeeded"
FAILED = "image_generation.partial_failed"
COMPLETED = "image_generation.completed"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A simulator whose streams have no gap unless a test's fault asks for one."""
    simulator = start_simulator("--api-key", API_KEY, "--stream-gap", "0")
    yield simulator
    simulator.finish()  # fails the run if a broken, stalled or abandoned stream logged an error


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.base_url, timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}, verify=TLS
    ) as http:
        yield http


@dataclass
class Event:
    """One server-sent event as it arrived: its raw text, and when (monotonic seconds)."""

    raw: str
    at: float

    @property
    def name(self) -> str | None:
        lines = [line for line in self.raw.split("\n") if line.startswith("event: ")]
        return lines[0].removeprefix("event: ") if lines else None

    @property
    def data(self) -> str:
        (line,) = [line for line in self.raw.split("\n") if line.startswith("data: ")]
        return line.removeprefix("data: ")

    def json(self) -> dict:
        return json.loads(self.data)


def body(**fields: object) -> dict:
    return {"model": MODEL, "prompt": "a red fox", "stream": True, **fields}


def set_of(count: int, **fields: object) -> dict:
    return body(
        sequential_image_generation="auto",
        sequential_image_generation_options={"max_images": count},
        **fields,
    )


def read_events(response: httpx.Response, into: list[Event]) -> None:
    """Split the body into events on the blank line that ends each, timestamping each as it
    completes; ``into`` keeps what arrived even if the stream then breaks."""
    pending = ""
    for text in response.iter_text():
        pending += text
        while "\n\n" in pending:
            raw, pending = pending.split("\n\n", 1)
            into.append(Event(raw, time.monotonic()))
    assert pending == "", f"bytes after the last event: {pending!r}"


def stream(
    client: httpx.Client, payload: dict, fault: str | None = None
) -> tuple[httpx.Response, list[Event]]:
    headers = {"x-simulator-fault": fault} if fault else {}
    events: list[Event] = []
    with client.stream("POST", GENERATIONS, json=payload, headers=headers) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            read_events(response, events)
        else:
            response.read()
    return response, events


# --- The events ---------------------------------------------------------------------------------


def test_a_stream_is_the_contracts_events_in_order(client: httpx.Client, sim: Simulator) -> None:
    started = time.time()
    response, events = stream(client, set_of(3, size="64x48"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert [event.name for event in events] == [SUCCEEDED, SUCCEEDED, SUCCEEDED, COMPLETED, None]
    assert events[-1].raw == "data: [DONE]"
    for index, event in enumerate(events[:3]):
        document = event.json()
        assert list(document) == ["type", "model", "created", "image_index", "url", "size"]
        assert document["type"] == event.name
        assert (document["model"], document["image_index"], document["size"]) == (MODEL, index, "64x48")
        assert abs(document["created"] - started) < 60
        assert document["url"].startswith(f"{sim.base_url}/images/") and document["url"].endswith(".png")
        assert png_size(httpx.get(document["url"], verify=TLS).content) == (64, 48)
    completed = events[3].json()
    assert list(completed) == ["type", "model", "created", "usage"]
    assert completed["type"] == COMPLETED and completed["model"] == MODEL
    assert completed["usage"] == {"generated_images": 3, "output_tokens": 36, "total_tokens": 36}


def test_the_wire_format_is_event_then_data_lines(client: httpx.Client) -> None:
    with client.stream("POST", GENERATIONS, json=body(size="16x16")) as response:
        raw = response.read()
    assert raw.startswith(b"event: image_generation.partial_succeeded\ndata: {")
    assert b"\n\nevent: image_generation.completed\ndata: {" in raw
    assert raw.endswith(b"}\n\ndata: [DONE]\n\n")


def test_b64_jpeg_streams_carry_real_jpegs(client: httpx.Client) -> None:
    _, events = stream(client, body(n=2, size="40x30", response_format="b64_json", output_format="jpeg"))
    images = [event.json() for event in events[:2]]
    for index, document in enumerate(images):
        assert "url" not in document and document["image_index"] == index
        assert jpeg_size(base64.b64decode(document["b64_json"], validate=True)) == (40, 30)
    assert events[2].json()["usage"]["generated_images"] == 2


def test_failed_entries_stream_as_partial_failed_and_are_not_counted(client: httpx.Client) -> None:
    _, events = stream(client, set_of(4), "fail_images=1,2,fail_code=OutputImageRiskDetection")
    assert [event.name for event in events] == [SUCCEEDED, FAILED, FAILED, SUCCEEDED, COMPLETED, None]
    failed = events[1].json()
    assert list(failed) == ["type", "model", "created", "image_index", "error"]
    assert failed["image_index"] == 1 and failed["error"]["code"] == "OutputImageRiskDetection"
    assert isinstance(failed["error"]["message"], str) and failed["error"]["message"]
    assert events[4].json()["usage"]["generated_images"] == 2


def test_usage_faults_reach_the_completed_event(client: httpx.Client) -> None:
    _, events = stream(client, set_of(2), "usage_images=7")
    assert events[-2].json()["usage"]["generated_images"] == 7
    _, events = stream(client, set_of(2), "usage_images=none")
    assert events[-2].name == COMPLETED and "usage" not in events[-2].json()


def test_images_fault_sets_the_number_of_events(client: httpx.Client) -> None:
    _, events = stream(client, set_of(5), "images=2")
    assert [event.name for event in events] == [SUCCEEDED, SUCCEEDED, COMPLETED, None]


# --- Timing -------------------------------------------------------------------------------------


def test_stream_gap_spaces_the_image_events(client: httpx.Client) -> None:
    gap = 0.3
    _, events = stream(client, set_of(3), f"stream_gap={gap}")
    arrivals = [event.at for event in events]
    assert arrivals[1] - arrivals[0] >= gap - 0.02
    assert arrivals[2] - arrivals[1] >= gap - 0.02


def test_the_default_gap_is_half_a_second_so_make_run_shows_a_stream() -> None:
    simulator = start_simulator()
    try:
        with httpx.Client(base_url=simulator.base_url, timeout=30, verify=TLS) as http:
            _, events = stream(http, set_of(2))
        assert events[1].at - events[0].at >= 0.45
    finally:
        simulator.finish()


def test_latency_comes_before_the_headers_and_first_event() -> None:
    simulator = start_simulator("--latency", "0.4", "--stream-gap", "0")
    try:
        with httpx.Client(base_url=simulator.base_url, timeout=30, verify=TLS) as http:
            started = time.monotonic()
            with http.stream("POST", GENERATIONS, json=set_of(2)) as response:
                assert time.monotonic() - started >= 0.38  # the status line waited too
                events: list[Event] = []
                read_events(response, events)
        assert len(events) == 4
    finally:
        simulator.finish()


# --- Streams that break or stall ----------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 1, 2, 3])
def test_break_after_drops_the_connection_after_that_many_events(client: httpx.Client, after: int) -> None:
    events: list[Event] = []
    with client.stream(
        "POST", GENERATIONS, json=set_of(2), headers={"x-simulator-fault": f"break_after={after}"}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        with pytest.raises(httpx.RemoteProtocolError):
            read_events(r, events)
    assert [event.name for event in events] == [SUCCEEDED, SUCCEEDED, COMPLETED][:after]
    assert stream(client, set_of(2))[0].status_code == 200  # the simulator is unharmed


def test_stall_after_goes_quiet_then_goes_on(client: httpx.Client) -> None:
    _, events = stream(client, set_of(3), "stall_after=1,stall=0.5")
    assert [event.name for event in events] == [SUCCEEDED, SUCCEEDED, SUCCEEDED, COMPLETED, None]
    assert events[1].at - events[0].at >= 0.48
    assert events[2].at - events[1].at < 0.48


def test_a_stall_outlasts_an_idle_read_timeout(sim: Simulator) -> None:
    timeout = httpx.Timeout(30, read=0.5)
    headers = {"Authorization": f"Bearer {API_KEY}", "x-simulator-fault": "stall_after=2"}
    events: list[Event] = []
    with httpx.Client(base_url=sim.base_url, timeout=timeout, headers=headers, verify=TLS) as http:
        with http.stream("POST", GENERATIONS, json=set_of(3)) as response:
            with pytest.raises(httpx.ReadTimeout):
                read_events(response, events)
    assert [event.name for event in events] == [SUCCEEDED, SUCCEEDED]
    # The abandoned handler was cancelled, not left sleeping: the fixture's clean exit checks
    # the rest, and the simulator answers meanwhile.
    assert httpx.get(f"{sim.base_url}/healthz", verify=TLS).status_code == 200


def test_a_client_leaving_mid_stream_does_not_upset_the_simulator(client: httpx.Client) -> None:
    headers = {"x-simulator-fault": "stream_gap=0.2"}
    with client.stream("POST", GENERATIONS, json=set_of(5), headers=headers) as response:
        next(response.iter_raw())
    assert stream(client, set_of(1))[0].status_code == 200


# --- Refusals before the stream -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "payload", "status", "code"),
    [
        ("status=429", set_of(3), 429, "rate_limit_exceeded"),
        ("code=ContentSecurityDetectionError", set_of(3), 400, "ContentSecurityDetectionError"),
        (None, body(stream="yes"), 400, "InvalidParameter"),
        (None, body(size="huge"), 400, "InvalidParameter"),
    ],
)
def test_refusals_before_a_stream_are_plain_json(
    client: httpx.Client, fault: str | None, payload: dict, status: int, code: str
) -> None:
    response, events = stream(client, payload, fault)
    assert response.status_code == status and events == []
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


def test_a_bad_key_is_refused_before_a_stream(sim: Simulator) -> None:
    response = httpx.post(
        f"{sim.base_url}{GENERATIONS}", json=set_of(2), headers={"Authorization": "Bearer no"}, verify=TLS
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


# --- The official SDK ---------------------------------------------------------------------------


def sdk(sim: Simulator) -> openai.OpenAI:
    return openai_sdk(sim.base_url, API_KEY, max_retries=0, timeout=30)


def test_the_openai_sdk_iterates_a_simulator_stream(sim: Simulator) -> None:
    events = sdk(sim).images.generate(
        model=MODEL,
        prompt="a red fox",
        stream=True,
        extra_body={
            "sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 3},
        },
    )
    seen = list(events)
    assert [event.type for event in seen] == [SUCCEEDED, SUCCEEDED, SUCCEEDED, COMPLETED]
    assert [event.image_index for event in seen[:3]] == [0, 1, 2]  # type: ignore[union-attr]
    assert all(event.url.startswith(f"{sim.base_url}/images/") for event in seen[:3])  # type: ignore[union-attr]
    assert seen[3].usage.generated_images == 3  # type: ignore[union-attr]


def test_the_openai_sdk_raises_at_a_partial_failed_event(sim: Simulator) -> None:
    """What a caller using the SDK meets: the SDK treats any event whose data has an ``error``
    as the end of the stream and raises, after yielding the images before it."""
    events = sdk(sim).images.generate(
        model=MODEL,
        prompt="a red fox",
        stream=True,
        extra_body={"n": 3},
        extra_headers={"x-simulator-fault": "fail_images=1"},
    )
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for event in events:
            seen.append(event.type)
    assert seen == [SUCCEEDED]
    assert "sensitive" in caught.value.message
    assert caught.value.body == {
        "code": "OutputImageSensitiveContentDetected",
        "message": "The request failed because the output image may contain sensitive information.",
    }
