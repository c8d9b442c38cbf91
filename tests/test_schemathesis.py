"""schemathesis against the gateway's own OpenAPI schema: what it documents is what it does.

Every operation gets a bounded number of generated requests, valid and invalid ones, with real
credentials (a team key for the public API, the admin token for /admin), against a gateway of its
own (its own Redis too: the generated admin calls create keys and change prices).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import ADMIN_TOKEN, Gateway, RedisServer, Simulator, gateway_env


@pytest.fixture(scope="module")
def fuzzed_gateway(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("schemathesis")
    redis = RedisServer(directory / "redis").start()
    gateway = Gateway(
        gateway_env(redis.url, simulator.url, directory / "state"), directory / "gw.log"
    ).start()
    yield gateway
    gateway.stop()
    redis.kill()


@pytest.fixture(scope="module")
def team_key(fuzzed_gateway: Gateway) -> str:
    return fuzzed_gateway.create_key(team="fuzz", budget_usd="1000", budget_period="total")[0]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
IMAGES = "POST /v1/images/generations"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
    derandomize=True,
    database=None,
)


def _operations(gateway: Gateway) -> list[APIOperation]:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def _upstream_compatible(case: schemathesis.Case) -> schemathesis.Case:
    """Two things the schema cannot say, left out of the valid requests.

    Sizes are the upstream's to refuse (the simulator allows less than the gateway does). And
    JSON Schema counts ``4.0`` as an integer, while the upstream (like Go's encoding/json) and so
    the gateway refuse a count written with a fraction; the schema's description says so.
    """
    body = case.body
    if isinstance(body, dict):
        body.pop("size", None)
        if isinstance(body.get("n"), float):
            body["n"] = int(body["n"])
        options = body.get("sequential_image_generation_options")
        if isinstance(options, dict) and isinstance(options.get("max_images"), float):
            options["max_images"] = int(options["max_images"])
    return case


def _fuzz(operation: APIOperation, token: str) -> None:
    strategy = operation.as_strategy()
    checks = CHECKS
    if operation.label == IMAGES:
        # What the schema calls a valid request, the gateway must not refuse with a 4xx of its own.
        strategy, checks = strategy.map(_upstream_compatible), [*CHECKS, positive_data_acceptance]

    @FUZZ
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks, timeout=30)

    run()


def test_gateway_conforms_to_its_own_schema(fuzzed_gateway: Gateway, team_key: str) -> None:
    """One hypothesis run per operation (schemathesis' pytest plugin needs an older pytest)."""
    failures: dict[str, BaseException] = {}
    operations = _operations(fuzzed_gateway)
    assert {op.label for op in operations} >= {IMAGES, "GET /v1/models", "POST /admin/v1/keys"}
    for operation in operations:
        token = ADMIN_TOKEN if operation.path.startswith("/admin/") else team_key
        try:
            _fuzz(operation, token)
        except (AssertionError, Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - report them all
            failures[operation.label] = exc
    assert not failures, "\n\n".join(f"{label}: {exc}" for label, exc in failures.items())
