"""The upstream simulator, exercised as a real process over real HTTP.

The gateway's own tests and the benchmark trust the simulator to behave like the upstream and to
misbehave exactly when told; these tests hold it to that.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
from PIL import Image

from tests.support import TLS

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-simulator-test"
GENERATIONS = "/v1/images/generations"
OPEN_LATENCY = 0.3


# --- Running the simulator ----------------------------------------------------------------------


@dataclass
class Simulator:
    process: subprocess.Popen[bytes]
    base_url: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def finish(self) -> None:
        """Stop it and fail the test run if it did not exit cleanly or logged an exception
        (aiohttp logs handler errors instead of raising them)."""
        status = self.stop()
        log = self.stderr()
        self.stderr_path.unlink(missing_ok=True)
        assert status == 0, log
        assert "Traceback" not in log and "Error handling request" not in log, log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(*args: str, deadline: float = 15.0) -> Simulator:
    """Start ``python -m gateway.simulator`` on a free port and wait until /healthz answers.

    The free port can be taken between choosing and binding it, so a start that dies early is
    retried on another port.
    """
    for _ in range(3):
        port = _free_port()
        stderr_file = tempfile.NamedTemporaryFile(prefix="simulator-", suffix=".log", delete=False)
        # ``-m`` puts the working directory on sys.path, so the repository root is enough.
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.simulator", "--port", str(port), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
        stderr_file.close()
        simulator = Simulator(process, f"http://127.0.0.1:{port}", Path(stderr_file.name))
        if _wait_healthy(simulator, time.monotonic() + deadline):
            return simulator
        simulator.stop()
        log = simulator.stderr()
        simulator.stderr_path.unlink(missing_ok=True)
    raise RuntimeError(f"simulator did not start: {log}")


def _wait_healthy(simulator: Simulator, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if simulator.process.poll() is not None:
            return False
        try:
            if httpx.get(f"{simulator.base_url}/healthz", timeout=1, verify=TLS).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A simulator that requires API_KEY and answers at once."""
    simulator = start_simulator("--api-key", API_KEY)
    yield simulator
    simulator.finish()


@pytest.fixture(scope="module")
def open_sim() -> Iterator[Simulator]:
    """A simulator with no key configured and some latency."""
    simulator = start_simulator("--latency", str(OPEN_LATENCY))
    yield simulator
    simulator.finish()


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.base_url, timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}, verify=TLS
    ) as http:
        http.post("/_simulator/reset").raise_for_status()
        yield http


def generate(client: httpx.Client, fault: str | None = None, **fields: object) -> httpx.Response:
    body = {"model": "doubao-seedream-4-0-250828", "prompt": "a red fox", **fields}
    headers = {"x-simulator-fault": fault} if fault else {}
    return client.post(GENERATIONS, json=body, headers=headers)


# --- PNG checking -------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """Check ``data`` is a well-formed PNG (signature, chunk CRCs, IHDR first, IEND last, IDAT
    inflating to exactly the scanlines the header promises) and return (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, kinds, idat = 8, [], b""
    header = b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        kinds.append(kind)
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    assert offset == len(data)
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    assert interlace == 0
    if colour == 3:
        assert b"PLTE" in kinds
    row_bytes = 1 + (width * depth * channels + 7) // 8
    pixels = zlib.decompress(idat)
    assert len(pixels) == height * row_bytes
    assert all(pixels[row * row_bytes] <= 4 for row in range(height))  # valid filter types
    return width, height


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Check ``data`` is a JPEG that a real decoder (Pillow's libjpeg) reads to the end, and
    return (width, height)."""
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "JPEG"
        picture.load()  # decodes every block: a broken scan raises here
        return picture.size


def b64_pngs(response: httpx.Response) -> list[bytes]:
    return [base64.b64decode(item["b64_json"], validate=True) for item in response.json()["data"]]


# --- Authentication and validation --------------------------------------------------------------


def test_healthz(sim: Simulator) -> None:
    response = httpx.get(f"{sim.base_url}/healthz", verify=TLS)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {API_KEY}", API_KEY])
def test_wrong_key_gets_the_upstream_401_envelope(sim: Simulator, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(
        f"{sim.base_url}{GENERATIONS}", headers=headers, json={"model": "m", "prompt": "p"}, verify=TLS
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": {"message": "Invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}
    }


def test_bad_key_is_rejected_before_faults_and_latency(sim: Simulator) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{sim.base_url}{GENERATIONS}",
        headers={"x-simulator-fault": "delay=5"},
        json={"model": "m", "prompt": "p"},
        verify=TLS,
    )
    assert response.status_code == 401
    assert time.monotonic() - started < 2


def test_no_key_configured_accepts_any_caller(open_sim: Simulator) -> None:
    for headers in ({}, {"Authorization": "Bearer anything"}):
        response = httpx.post(
            f"{open_sim.base_url}{GENERATIONS}",
            headers=headers,
            json={"model": "m", "prompt": "p"},
            verify=TLS,
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "p"}, "model"),
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": 3}, "prompt"),
        ({"model": "m", "prompt": "p", "n": 0}, "n"),
        ({"model": "m", "prompt": "p", "n": "2"}, "n"),
        ({"model": "m", "prompt": "p", "size": "huge"}, "size"),
        ({"model": "m", "prompt": "p", "response_format": "png"}, "response_format"),
        (
            {
                "model": "m",
                "prompt": "p",
                "sequential_image_generation": "auto",
                "sequential_image_generation_options": {"max_images": 16},
            },
            "sequential_image_generation_options.max_images",
        ),
    ],
)
def test_invalid_bodies_get_a_400_naming_the_parameter(client: httpx.Client, body: dict, param: str) -> None:
    response = client.post(GENERATIONS, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "InvalidParameter"
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_gets_a_400(client: httpx.Client, content: bytes) -> None:
    response = client.post(GENERATIONS, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidParameter"


# --- Generation ---------------------------------------------------------------------------------


def test_url_images_are_served_as_real_pngs(client: httpx.Client, sim: Simulator) -> None:
    response = generate(client, n=3, size="640x480")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert isinstance(document["created"], int) and abs(document["created"] - time.time()) < 60
    assert len(document["data"]) == 3
    assert document["usage"] == {
        "generated_images": 3,
        "output_tokens": 3 * 640 * 480 // 256,
        "total_tokens": 3 * 640 * 480 // 256,
    }
    urls = [item["url"] for item in document["data"]]
    assert len(set(urls)) == 3
    for item in document["data"]:
        assert item["size"] == "640x480"
        assert item["url"].startswith(f"{sim.base_url}/images/") and item["url"].endswith(".png")
        image = httpx.get(item["url"], verify=TLS)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert png_size(image.content) == (640, 480)


def test_unknown_image_id_is_404(sim: Simulator) -> None:
    assert httpx.get(f"{sim.base_url}/images/nonsense.png", verify=TLS).status_code == 404
    assert httpx.get(f"{sim.base_url}/images/99999x99999-0-ab.png", verify=TLS).status_code == 404


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (None, (1024, 1024)),
        ("1K", (1024, 1024)),
        ("2K", (2048, 2048)),
        ("3K", (3072, 3072)),
        ("4K", (4096, 4096)),
        ("1664x2496", (1664, 2496)),
        ("7x3", (7, 3)),
    ],
)
def test_b64_images_decode_to_pngs_of_the_requested_size(
    client: httpx.Client, size: str | None, expected: tuple[int, int]
) -> None:
    fields = {"response_format": "b64_json", **({"size": size} if size else {})}
    response = generate(client, **fields)
    assert response.status_code == 200
    (item,) = response.json()["data"]
    assert item["size"] == f"{expected[0]}x{expected[1]}"
    (png,) = b64_pngs(response)
    assert png_size(png) == expected
    assert len(png) < 64 * 1024  # a simple pattern compresses to a few KB, even at 4K


def test_n_images(client: httpx.Client) -> None:
    response = generate(client, n=4, response_format="b64_json", size="32x16")
    pngs = b64_pngs(response)
    assert len(pngs) == 4
    assert all(png_size(png) == (32, 16) for png in pngs)
    assert response.json()["usage"]["generated_images"] == 4


def test_sequential_generation_returns_max_images_whatever_n_says(client: httpx.Client) -> None:
    response = generate(
        client, n=1, sequential_image_generation="auto", sequential_image_generation_options={"max_images": 4}
    )
    assert len(response.json()["data"]) == 4
    assert response.json()["usage"]["generated_images"] == 4


def test_sequential_generation_defaults_to_15_images(client: httpx.Client) -> None:
    response = generate(client, sequential_image_generation="auto")
    assert len(response.json()["data"]) == 15


def test_sequential_disabled_uses_n(client: httpx.Client) -> None:
    response = generate(
        client,
        n=2,
        sequential_image_generation="disabled",
        sequential_image_generation_options={"max_images": 9},
    )
    assert len(response.json()["data"]) == 2


def test_unknown_fields_are_accepted(client: httpx.Client) -> None:
    response = generate(
        client,
        seed=42,
        watermark=False,
        guidance_scale=2.5,
        stream=False,
        image=["https://example.com/a.png"],
        output_format="png",
    )
    assert response.status_code == 200


# --- Faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "expected_error"),
    [
        ("status=500", 500, {"message": "internal error", "type": "server_error", "code": "internal_error"}),
        (
            "status=401",
            401,
            {"message": "Invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"},
        ),
        ("status=429", 429, {"code": "rate_limit_exceeded"}),
        ("status=402", 402, {"code": "insufficient_balance"}),
        ("status=403", 403, {"type": "invalid_request_error"}),
        ("status=502", 502, {"type": "server_error"}),
        ("status=503", 503, {"type": "server_error"}),
        (
            "status=400,code=OutputImageSensitiveContentDetected",
            400,
            {"type": "invalid_request_error", "code": "OutputImageSensitiveContentDetected"},
        ),
        ("code=ContentSecurityDetectionError", 400, {"code": "ContentSecurityDetectionError"}),
        ("status=500,code=upstream_busy", 500, {"type": "server_error", "code": "upstream_busy"}),
    ],
)
def test_status_faults_answer_upstream_style_envelopes(
    client: httpx.Client, fault: str, status: int, expected_error: dict
) -> None:
    response = generate(client, fault)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert expected_error.items() <= error.items()
    assert set(error) >= {"message", "type", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if status == 402:
        assert "insufficient balance" in error["message"].lower()


def test_status_500_envelope_is_exact(client: httpx.Client) -> None:
    response = generate(client, "status=500")
    assert response.json() == {
        "error": {"message": "internal error", "type": "server_error", "code": "internal_error"}
    }


def test_fault_precedence_is_header_then_query_then_body(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": "p", "simulator_fault": "status=402"}
    query = {"simulator_fault": "status=429"}
    header = {"x-simulator-fault": "status=500"}
    assert client.post(GENERATIONS, json=body, params=query, headers=header).status_code == 500
    assert client.post(GENERATIONS, json=body, params=query).status_code == 429
    assert client.post(GENERATIONS, json=body).status_code == 402
    assert client.post(GENERATIONS, json={"model": "m", "prompt": "p"}).status_code == 200


@pytest.mark.parametrize(
    "fault",
    [
        "bogus=1",
        "status=200",
        "status=abc",
        "delay=-1",
        "images",
        "garbage=maybe",
        "drop=2",
        "fail_images=x",
        "fail_images=1,x",
        "fail_images=-1",
        "status=500,3",
        "fail_code=",
        "usage_images=-1",
        "stream_gap=-1",
        "break_after=abc",
        "stall=forever",
    ],
)
def test_malformed_faults_fail_loudly(client: httpx.Client, fault: str) -> None:
    response = generate(client, fault)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "simulator_fault"
    assert response.json()["error"]["code"] == "InvalidParameter"


def test_delay_fault_waits_before_answering(client: httpx.Client) -> None:
    started = time.monotonic()
    response = generate(client, "delay=0.4,status=503")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert 0.38 <= elapsed < 3


def test_latency_applies_to_every_call_and_does_not_serialise_them(open_sim: Simulator) -> None:
    async def one(http: httpx.AsyncClient) -> float:
        started = time.monotonic()
        response = await http.post(GENERATIONS, json={"model": "m", "prompt": "p"})
        assert response.status_code == 200
        return time.monotonic() - started

    async def burst() -> tuple[list[float], float]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=open_sim.base_url, limits=limits, timeout=30, verify=TLS
        ) as http:
            started = time.monotonic()
            durations = await asyncio.gather(*(one(http) for _ in range(50)))
            return durations, time.monotonic() - started

    durations, total = asyncio.run(burst())
    assert min(durations) >= OPEN_LATENCY - 0.02
    # Fifty calls waiting 0.3 s each would take 15 s if the waits blocked one another.
    assert total < OPEN_LATENCY * 5


def test_delay_fault_overrides_latency(open_sim: Simulator) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{open_sim.base_url}{GENERATIONS}",
        json={"model": "m", "prompt": "p"},
        headers={"x-simulator-fault": "delay=0"},
        verify=TLS,
    )
    assert response.status_code == 200
    assert time.monotonic() - started < OPEN_LATENCY


def test_garbage_fault_answers_html(client: httpx.Client) -> None:
    response = generate(client, "garbage=1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_garbage_can_carry_an_error_status(client: httpx.Client) -> None:
    response = generate(client, "status=502,garbage=1")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")


def test_truncated_fault_answers_cut_off_json(client: httpx.Client) -> None:
    response = generate(client, "garbage=truncated")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content.startswith(b'{"created"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_drop_fault_closes_the_connection_without_a_response(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        generate(client, "drop=1")
    # The simulator itself is unharmed.
    assert generate(client).status_code == 200


def test_drop_fault_is_a_disconnect_for_aiohttp_too(sim: Simulator) -> None:
    async def call() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{sim.base_url}{GENERATIONS}",
                json={"model": "m", "prompt": "p", "simulator_fault": "drop=1"},
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as response:
                await response.read()

    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(call())


def test_drop_happens_after_the_delay(client: httpx.Client) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        generate(client, "drop=1,delay=0.3")
    assert time.monotonic() - started >= 0.28


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
@pytest.mark.parametrize(("n", "images"), [(1, 3), (4, 1), (2, 0)])
def test_images_fault_overrides_the_count(
    client: httpx.Client, n: int, images: int, response_format: str
) -> None:
    response = generate(client, f"images={images}", n=n, response_format=response_format)
    assert response.status_code == 200
    assert len(response.json()["data"]) == images
    assert response.json()["usage"]["generated_images"] == images


def test_images_fault_overrides_sequential_max_images(client: httpx.Client) -> None:
    response = generate(
        client,
        "images=2",
        sequential_image_generation="auto",
        sequential_image_generation_options={"max_images": 10},
    )
    assert len(response.json()["data"]) == 2


def test_image_bytes_fault_pads_b64_images_and_keeps_them_valid(client: httpx.Client) -> None:
    response = generate(client, "image_bytes=300000,images=2", response_format="b64_json", size="64x64")
    items = response.json()["data"]
    assert len(items) == 2
    for item in items:
        assert abs(len(item["b64_json"]) - 300_000) <= 300_000 * 0.01
        assert png_size(base64.b64decode(item["b64_json"])) == (64, 64)


def test_image_bytes_fault_applies_to_url_images(client: httpx.Client) -> None:
    response = generate(client, "image_bytes=400000", size="16x16")
    image = httpx.get(response.json()["data"][0]["url"], verify=TLS)
    assert abs(len(base64.b64encode(image.content)) - 400_000) <= 4_000
    assert png_size(image.content) == (16, 16)


def test_a_20_mb_response_comes_back_whole_and_quickly(client: httpx.Client) -> None:
    started = time.monotonic()
    response = generate(client, "image_bytes=20000000", response_format="b64_json", size="2K")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert len(response.content) > 20_000_000
    (png,) = b64_pngs(response)
    assert png_size(png) == (2048, 2048)
    assert elapsed < 5
    # Cached: the second identical call is not paying for 15 MB of random bytes again.
    started = time.monotonic()
    assert len(
        generate(client, "image_bytes=20000000", response_format="b64_json", size="2K").content
    ) == len(response.content)
    assert time.monotonic() - started < 5


def test_a_client_leaving_mid_body_does_not_upset_the_simulator(client: httpx.Client) -> None:
    # The module fixture's teardown fails the run if this made the simulator log an error.
    body = {"model": "m", "prompt": "p", "response_format": "b64_json"}
    with client.stream(
        "POST", GENERATIONS, json=body, headers={"x-simulator-fault": "image_bytes=30000000"}
    ) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) > 30_000_000
        next(response.iter_raw())
    assert generate(client).status_code == 200


# --- Recording ----------------------------------------------------------------------------------


def recorded(client: httpx.Client) -> dict:
    response = client.get("/_simulator/requests")
    assert response.status_code == 200
    return response.json()


def test_recording_keeps_headers_and_the_raw_body(client: httpx.Client) -> None:
    prompt = "一只戴着宇航员头盔的橘猫，漂浮在太空站里，赛博朋克风格"
    body = json.dumps({"model": "doubao-seedream-4-5-251128", "prompt": prompt}, ensure_ascii=False).encode(
        "utf-8"
    )
    response = client.post(
        GENERATIONS, content=body, headers={"content-type": "application/json", "X-Trace": "abc"}
    )
    assert response.status_code == 200

    document = recorded(client)
    assert document["count"] == 1
    (entry,) = document["requests"]
    assert entry["method"] == "POST"
    assert entry["path"] == GENERATIONS
    assert base64.b64decode(entry["body_b64"]) == body
    assert json.loads(base64.b64decode(entry["body_b64"]))["prompt"] == prompt
    assert entry["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert entry["headers"]["x-trace"] == "abc"
    assert abs(entry["received_at"] - time.time()) < 60


def test_recording_includes_rejected_and_faulted_calls(client: httpx.Client, sim: Simulator) -> None:
    httpx.post(
        f"{sim.base_url}{GENERATIONS}",
        headers={"Authorization": "Bearer caller-key"},
        json={"model": "m", "prompt": "p"},
        verify=TLS,
    )
    generate(client, "status=500")
    with pytest.raises(httpx.RemoteProtocolError):
        generate(client, "drop=1")
    document = recorded(client)
    assert document["count"] == 3
    auths = [entry["headers"].get("authorization") for entry in document["requests"]]
    assert auths == ["Bearer caller-key", f"Bearer {API_KEY}", f"Bearer {API_KEY}"]


def test_reset_clears_the_recording(client: httpx.Client) -> None:
    for _ in range(3):
        generate(client)
    assert recorded(client)["count"] == 3
    response = client.post("/_simulator/reset")
    assert response.status_code == 200
    assert recorded(client) == {"count": 0, "requests": []}


def test_recording_is_bounded_but_the_count_is_not(client: httpx.Client) -> None:
    for i in range(1005):
        client.post(GENERATIONS, json={"model": "m", "prompt": f"p{i}"})
    document = recorded(client)
    assert document["count"] == 1005
    assert len(document["requests"]) == 1000
    prompts = [json.loads(base64.b64decode(e["body_b64"]))["prompt"] for e in document["requests"]]
    assert prompts[0] == "p5" and prompts[-1] == "p1004"


# --- The command line ---------------------------------------------------------------------------


def test_announces_itself_and_exits_cleanly_on_sigterm() -> None:
    simulator = start_simulator()
    assert f"simulator listening on {simulator.base_url}" in simulator.stderr()
    simulator.finish()  # asserts exit status 0


def test_port_in_use_is_a_clear_error(sim: Simulator) -> None:
    port = sim.base_url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "gateway.simulator", "--port", port],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_help_describes_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.simulator", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for option in ("--host", "--port", "--api-key", "--latency", "9001", "x-simulator-fault", "image_bytes"):
        assert option in result.stdout
    for option in ("--stream-gap", "fail_images", "fail_code", "usage_images", "break_after", "stall_after"):
        assert option in result.stdout


# --- Sets with failed entries, and usage --------------------------------------------------------


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_failed_entries_stand_in_their_place_and_are_not_counted(
    client: httpx.Client, response_format: str
) -> None:
    response = generate(client, "fail_images=1,3", n=4, size="64x32", response_format=response_format)
    assert response.status_code == 200
    data = response.json()["data"]
    assert [("error" in item) for item in data] == [False, True, False, True]
    for index in (1, 3):
        assert data[index] == {
            "error": {
                "code": "OutputImageSensitiveContentDetected",
                "message": "The request failed because the output image may contain sensitive information.",
            }
        }
    for index in (0, 2):
        assert data[index]["size"] == "64x32"
        assert ("url" if response_format == "url" else "b64_json") in data[index]
    assert response.json()["usage"] == {
        "generated_images": 2,
        "output_tokens": 2 * 64 * 32 // 256,
        "total_tokens": 2 * 64 * 32 // 256,
    }


def test_a_set_whose_entries_all_failed_made_nothing(client: httpx.Client) -> None:
    response = generate(
        client,
        "fail_images=all,fail_code=OutputImageRiskDetection",
        sequential_image_generation="auto",
        sequential_image_generation_options={"max_images": 3},
    )
    document = response.json()
    assert response.status_code == 200
    assert [item["error"]["code"] for item in document["data"]] == ["OutputImageRiskDetection"] * 3
    assert "risky" in document["data"][0]["error"]["message"]
    assert document["usage"] == {"generated_images": 0, "output_tokens": 0, "total_tokens": 0}


def test_an_unknown_fail_code_gets_a_generic_message(client: httpx.Client) -> None:
    response = generate(client, "fail_images=0,fail_code=SomethingNew", n=2)
    assert response.json()["data"][0]["error"] == {
        "code": "SomethingNew",
        "message": "The image could not be generated.",
    }


def test_the_answer_names_its_model(client: httpx.Client) -> None:
    document = generate(client, model="doubao-seedream-4-5-251128").json()
    assert list(document) == ["model", "created", "data", "usage"]
    assert document["model"] == "doubao-seedream-4-5-251128"


def test_usage_images_fault_makes_usage_disagree_with_the_entries(client: httpx.Client) -> None:
    response = generate(client, "usage_images=5,fail_images=0", n=3, size="16x16")
    assert sum("url" in item for item in response.json()["data"]) == 2
    assert response.json()["usage"] == {"generated_images": 5, "output_tokens": 5, "total_tokens": 5}


def test_usage_images_none_leaves_usage_out(client: httpx.Client) -> None:
    for response_format in ("url", "b64_json"):
        document = generate(client, "usage_images=none", n=2, response_format=response_format).json()
        assert "usage" not in document and len(document["data"]) == 2


@pytest.mark.parametrize(
    ("fault", "fields"),
    [
        ("fail_images=2", {"n": 2}),
        ("fail_images=1,images=1", {"n": 3}),
        ("break_after=1", {"n": 2}),
        ("stall_after=0", {}),
        ("break_after=3", {"n": 1, "stream": True}),
    ],
)
def test_a_fault_that_cannot_apply_to_the_call_fails_loudly(
    client: httpx.Client, fault: str, fields: dict
) -> None:
    response = generate(client, fault, **fields)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "simulator_fault"


# --- JPEG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["1x1", "7x3", "640x480", "4K", "1664x2496"])
def test_output_format_jpeg_gives_real_jpegs_in_b64(client: httpx.Client, size: str) -> None:
    response = generate(client, n=2, size=size, response_format="b64_json", output_format="jpeg")
    assert response.status_code == 200
    width, height = (4096, 4096) if size == "4K" else map(int, size.split("x"))
    for item in response.json()["data"]:
        assert item["size"] == f"{width}x{height}"
        assert jpeg_size(base64.b64decode(item["b64_json"], validate=True)) == (width, height)


def test_output_format_jpeg_urls_serve_jpegs(client: httpx.Client, sim: Simulator) -> None:
    (item,) = generate(client, size="320x200", output_format="jpeg").json()["data"]
    assert item["url"].startswith(f"{sim.base_url}/images/") and item["url"].endswith(".jpeg")
    image = httpx.get(item["url"], verify=TLS)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert jpeg_size(image.content) == (320, 200)


def test_jpeg_is_one_colour_a_decoder_agrees_on(client: httpx.Client) -> None:
    (item,) = generate(client, size="33x17", response_format="b64_json", output_format="jpeg").json()["data"]
    with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as picture:
        colours = picture.convert("RGB").getcolors()
    assert colours is not None and len(colours) == 1
    ((count, (red, green, blue)),) = colours
    assert count == 33 * 17 and abs(red - 0x1F) <= 2 and abs(green - 0x4E) <= 2 and abs(blue - 0x79) <= 2


def test_image_bytes_pads_jpegs_and_keeps_them_valid(client: httpx.Client) -> None:
    response = generate(
        client, "image_bytes=1000000", size="64x64", response_format="b64_json", output_format="jpeg"
    )
    (item,) = response.json()["data"]
    assert abs(len(item["b64_json"]) - 1_000_000) <= 10_000
    assert jpeg_size(base64.b64decode(item["b64_json"])) == (64, 64)


def test_output_format_png_is_the_default_and_other_formats_are_refused(client: httpx.Client) -> None:
    (png,) = b64_pngs(generate(client, size="8x8", response_format="b64_json", output_format="png"))
    assert png_size(png) == (8, 8)
    response = generate(client, output_format="webp")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "output_format"
