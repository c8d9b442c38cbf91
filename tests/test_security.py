"""Security: secrets stored only as hashes, shown once, never leaked; the admin API closed.

The module runs its own Redis (with a password, one more secret to keep out of the logs) and its
own gateway at debug log level, and records every response it gets. Its last test greps all of
it, with the gateway's log and its metrics page, for every secret involved.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.admin.keys import KEY_ID_LENGTH
from tests.fault_tools import assert_envelope
from tests.support import (
    ADMIN_TOKEN,
    MODEL,
    MODEL_PRICE_MICROS,
    TLS,
    UPSTREAM_KEY,
    Gateway,
    RedisServer,
    Simulator,
    gateway_env,
    wait_until,
)
from tests.support import generate as support_generate

REDIS_PASSWORD = "test-redis-pw-" + hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:24]


@dataclass
class PasswordRedis(RedisServer):
    """A redis-server that requires a password, as a production one should."""

    def __post_init__(self) -> None:
        self.extra_args = ["--requirepass", REDIS_PASSWORD]

    @property
    def url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"AUTH %s\r\nPING\r\n" % REDIS_PASSWORD.encode())
                return b"+PONG" in sock.recv(64)
        except OSError:
            return False


@dataclass
class Transcript:
    """Every response of the module, and which one issued which team key."""

    responses: list[httpx.Response] = field(default_factory=list)
    issued: dict[str, int] = field(default_factory=dict)  # team key -> index of its issuing response
    gateways: list[Gateway] = field(default_factory=list)

    def record(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}" if token else ""}
        return httpx.Client(headers=headers, timeout=30, event_hooks={"response": [self.record]}, verify=TLS)

    def issue(self, gateway: Gateway, path: str = "/admin/v1/keys", **spec: Any) -> tuple[str, str]:
        """A new key (or a rotated one, with ``path``): (team key, key_id)."""
        if path == "/admin/v1/keys":
            spec = {"team": "security", "name": f"k{len(self.issued)}", **spec}
        with self.client(ADMIN_TOKEN) as admin:
            response = admin.post(gateway.url + path, json=spec)
        assert response.status_code in (200, 201), response.text
        token = response.json()["key"]
        self.issued[token] = len(self.responses) - 1
        return token, response.json()["key_id"]


@pytest.fixture(scope="module")
def transcript() -> Transcript:
    return Transcript()


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordRedis]:
    server = PasswordRedis(tmp_path_factory.mktemp("secure-redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def secure_gateway(
    secure_redis: PasswordRedis, simulator: Simulator, transcript: Transcript, tmp_path_factory
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("secure-gateway")
    # Every admin route x eight wrong credentials from one address: far past the guessing limit,
    # which tests/test_admin_auth.py tests; here each wrong credential must get its own 401.
    env = gateway_env(
        secure_redis.url,
        simulator.url,
        directory / "state",
        GATEWAY_LOG_LEVEL="debug",
        GATEWAY_ADMIN_AUTH_MAX_FAILURES="10000",
    )
    gateway = Gateway(env, directory / "gateway.log").start()
    transcript.gateways.append(gateway)
    yield gateway
    gateway.stop()


def generate(transcript: Transcript, gateway: Gateway, key: str, **extra: Any) -> httpx.Response:
    headers = {"Idempotency-Key": extra.pop("idempotency_key")} if "idempotency_key" in extra else {}
    with transcript.client(key) as client:
        return support_generate(gateway, key, client=client, headers=headers, prompt="security", **extra)


# -- keys at rest --------------------------------------------------------------------------------


def _every_value(client: redis.Redis) -> Iterator[bytes]:
    """Every key name, field and value in Redis, read by type (DUMP would compress them)."""
    for name in client.scan_iter(count=1000):
        yield name
        kind = client.type(name)
        if kind == b"string":
            yield client.get(name) or b""
        elif kind == b"hash":
            for item in client.hgetall(name).items():
                yield from item
        elif kind == b"list":
            yield from client.lrange(name, 0, -1)
        elif kind == b"set":
            yield from client.smembers(name)
        elif kind == b"zset":
            yield from (member for member, _ in client.zrange(name, 0, -1, withscores=True))
        elif kind == b"stream":
            for _, fields in client.xrange(name):
                for item in fields.items():
                    yield from item
        else:
            raise AssertionError(f"unexpected type {kind!r} for {name!r}")


def _secret_part(token: str) -> str:
    """What follows ``sk-gw-<key_id>_`` (it may itself contain ``_``)."""
    secret = token[len("sk-gw-") + KEY_ID_LENGTH + 1 :]
    assert len(secret) >= 40
    return secret


def test_keys_are_stored_only_as_hashes(
    secure_gateway: Gateway, secure_redis: PasswordRedis, transcript: Transcript
) -> None:
    first, first_id = transcript.issue(secure_gateway)
    second, second_id = transcript.issue(secure_gateway, budget_usd="5", budget_period="day")
    rotated, _ = transcript.issue(secure_gateway, f"/admin/v1/keys/{second_id}/rotate", grace_seconds=600)
    for key in (first, second, rotated):
        assert (
            generate(transcript, secure_gateway, key, idempotency_key=f"at-rest-{key[-4:]}").status_code
            == 200
        )
    with transcript.client(ADMIN_TOKEN) as admin:
        assert admin.delete(f"{secure_gateway.url}/admin/v1/keys/{first_id}").status_code == 200

    client = redis.Redis.from_url(secure_redis.url)
    stored = b"\n".join(_every_value(client))
    client.close()
    for token in (first, second, rotated):
        assert token.encode() not in stored and _secret_part(token).encode() not in stored
        assert hashlib.sha256(token.encode()).hexdigest().encode() in stored  # what is kept instead
    for secret in (UPSTREAM_KEY, ADMIN_TOKEN, REDIS_PASSWORD):
        assert secret.encode() not in stored
    # Nor in what Redis wrote to disk, which holds every write ever made, overwritten or not.
    on_disk = b"".join(p.read_bytes() for p in secure_redis.directory.rglob("*") if p.is_file())
    for token in (first, second, rotated):
        assert _secret_part(token).encode() not in on_disk


def test_secret_is_shown_once(secure_gateway: Gateway, transcript: Transcript) -> None:
    token, key_id = transcript.issue(secure_gateway, team="security", name="shown-once", rpm=100)
    base = f"{secure_gateway.url}/admin/v1/keys"
    with transcript.client(ADMIN_TOKEN) as admin:
        later = [
            admin.get(f"{base}/{key_id}"),
            admin.get(base),
            admin.get(base, params={"team": "security"}),
            admin.patch(f"{base}/{key_id}", json={"rpm": 50}),
            admin.get(f"{base}/{key_id}/usage"),
            admin.delete(f"{base}/{key_id}"),
        ]
    for response in later:
        assert response.status_code == 200, response.text
        assert _secret_part(token) not in response.text
        assert "sk-gw-" not in response.text
    assert later[0].json()["last4"] == token[-4:]  # enough to recognise it, not to use it


def _admin_routes(gateway: Gateway, key_id: str) -> list[tuple[str, str, Any]]:
    """(method, url, body) of every admin route the gateway documents, its parameters filled."""
    schema = httpx.get(f"{gateway.url}/openapi.json", verify=TLS).json()
    bodies = {
        "post": {"team": "intruder", "name": "x"},
        "put": {"price_usd": "0"},
        "patch": {"budget_usd": None},
    }
    routes = []
    for path, methods in schema["paths"].items():
        if not path.startswith("/admin/"):
            continue
        url = gateway.url + path.replace("{key_id}", key_id).replace("{model}", MODEL)
        routes += [(method.upper(), url, bodies.get(method)) for method in methods]
    assert len(routes) >= 9, routes
    return routes


def test_admin_api_refuses_missing_wrong_and_team_credentials(
    secure_gateway: Gateway, transcript: Transcript
) -> None:
    team_key, key_id = transcript.issue(secure_gateway, team="security", name="victim", budget_usd="1")
    wrong = {
        "no header": None,
        "empty": "",
        "wrong token": "not-the-admin-token",
        "token plus a character": ADMIN_TOKEN + "x",
        "token minus a character": ADMIN_TOKEN[:-1],
        "token prefix": ADMIN_TOKEN[:8],
        "a team key": team_key,
        "the master key": UPSTREAM_KEY,
    }
    for method, url, body in _admin_routes(secure_gateway, key_id):
        for name, token in wrong.items():
            with transcript.client(token) as client:
                response = client.request(method, url, json=body)
            assert_envelope(response, 401, "invalid_admin_token", retry=False)
            assert ADMIN_TOKEN not in response.text, name
        with transcript.client() as client:
            basic = client.request(method, url, json=body, auth=("admin", ADMIN_TOKEN))
        assert basic.status_code == 401
    with transcript.client(ADMIN_TOKEN) as admin:
        key = admin.get(f"{secure_gateway.url}/admin/v1/keys/{key_id}").json()
        prices = admin.get(f"{secure_gateway.url}/admin/v1/prices").json()["data"]
        teams = {k["team"] for k in admin.get(f"{secure_gateway.url}/admin/v1/keys").json()["data"]}
    assert key["status"] == "active" and key["budget_usd"] == "1.000000", "a refused call changed the key"
    assert {"model": MODEL, "price_usd": f"{MODEL_PRICE_MICROS / 1e6:.6f}", "unit": "image"} in prices
    assert "intruder" not in teams
    assert generate(transcript, secure_gateway, team_key).status_code == 200


def test_admin_api_is_disabled_without_an_admin_token(
    secure_redis: PasswordRedis, simulator: Simulator, gateway_factory, transcript: Transcript
) -> None:
    gateway = gateway_factory(secure_redis.url, simulator.url, GATEWAY_ADMIN_TOKEN="")
    transcript.gateways.append(gateway)
    for method, url, body in _admin_routes(gateway, "abcdefghijkl"):
        for token in (None, "", ADMIN_TOKEN):
            with transcript.client(token) as client:
                response = client.request(method, url, json=body)
            assert_envelope(response, 503, "admin_disabled", retry=False)
    assert httpx.get(f"{gateway.url}/healthz", verify=TLS).status_code == 200  # the rest works


# -- nothing leaks ---------------------------------------------------------------------------------


def _exercise_error_paths(transcript: Transcript, gateway: Gateway, redis_server: PasswordRedis) -> None:
    """Upstream failures of every kind and a Redis outage: the paths that log the most."""
    key, key_id = transcript.issue(gateway, team="security", name="errors", budget_usd="10")
    for fault in ("status=401", "status=402", "status=403", "status=500", "garbage=1", "drop=1"):
        assert generate(transcript, gateway, key, simulator_fault=fault).status_code >= 400
    assert generate(transcript, gateway, key, model="no-such-model").status_code == 404
    with transcript.client(key) as client:
        client.get(gateway.url + "/v1/models")
        client.get(gateway.url + "/admin/v1/keys")
        client.get(gateway.url + "/no/such/route")
    with transcript.client(ADMIN_TOKEN) as admin:
        admin.get(gateway.url + "/openapi.json")
        admin.get(gateway.url + "/readyz")
    redis_server.kill()
    assert generate(transcript, gateway, key).status_code == 503
    with transcript.client(ADMIN_TOKEN) as admin:
        assert admin.get(f"{gateway.url}/admin/v1/keys/{key_id}/usage").status_code == 503
        assert admin.get(gateway.url + "/readyz").status_code == 503
    redis_server.start()
    wait_until(lambda: generate(transcript, gateway, key).status_code == 200, timeout_s=20)


def test_no_secret_in_any_response_header_log_or_metric(
    secure_gateway: Gateway, secure_redis: PasswordRedis, transcript: Transcript
) -> None:
    """Runs last: greps everything the module produced for every secret involved."""
    _exercise_error_paths(transcript, secure_gateway, secure_redis)
    secrets = {"master key": UPSTREAM_KEY, "admin token": ADMIN_TOKEN, "Redis password": REDIS_PASSWORD}
    assert len(transcript.issued) >= 6 and len(transcript.responses) > 100

    for index, response in enumerate(transcript.responses):
        text = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        where = f"response {index} ({response.request.method} {response.request.url.path})"
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} is in {where}"
        for token, issuing in transcript.issued.items():
            if index != issuing:
                assert _secret_part(token) not in text, f"a team key is in {where}"

    produced = {
        **{f"log of gateway {i}": gw.log() for i, gw in enumerate(transcript.gateways)},
        **{f"metrics of gateway {i}": gw.metrics() for i, gw in enumerate(transcript.gateways[:1])},
        "Redis log": (secure_redis.directory / "redis.log").read_text(errors="replace"),
        **{str(p): p.read_text(errors="replace") for p in _state_files(secure_gateway)},
    }
    assert "redis error" in produced["log of gateway 0"]  # the outage was logged, so was checked
    for where, text in produced.items():
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} is in the {where}"
        for token in transcript.issued:
            assert _secret_part(token) not in text, f"a team key is in the {where}"


def _state_files(gateway: Gateway) -> list[Path]:
    state_dir = Path(gateway.env["GATEWAY_STATE_DIR"])
    return [p for p in state_dir.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
