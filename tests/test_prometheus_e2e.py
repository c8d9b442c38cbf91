"""A real Prometheus scrapes a running gateway, loads the shipped alert rules, and answers queries.

The binary comes from .tools/bin (scripts/fetch-prometheus.sh), PATH, or is fetched, the same way
tests/test_deploy_prometheus.py finds promtool.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.prometheus_tools import ALERTS, find_tool
from tests.support import MODEL, TLS, Gateway, free_port, generate, wait_until


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, gateway: Gateway) -> Iterator[str]:
    """A Prometheus scraping the session gateway every second, with the alert rules loaded."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "image-gateway",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [gateway.url.removeprefix("http://")]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            find_tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _ready(url, process, tmp_path / "prometheus.log"), timeout_s=30, what="prometheus ready"
        )
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"prometheus exited: {log.read_text()[-2000:]}")
    return httpx.get(f"{url}/-/ready", timeout=1, verify=TLS).status_code == 200


def query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5, verify=TLS)
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def scalar(url: str, expr: str) -> float | None:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_gateway_and_answers_with_the_expected_value(
    prometheus: str, gateway: Gateway
) -> None:
    team = f"prom-{secrets.token_hex(4)}"
    key, _ = gateway.create_key(team=team)
    for n in (2, 3, 1):
        response = generate(gateway, key, prompt="scraped", n=n)
        assert response.status_code == 200

    images = f'sum(gateway_images_total{{team="{team}"}})'
    wait_until(lambda: scalar(prometheus, images) == 6, timeout_s=30, what=f"{images} == 6")
    spend = scalar(prometheus, f'sum(gateway_spend_usd_total{{team="{team}",model="{MODEL}"}})')
    assert spend is not None and abs(spend - 6 * 0.135) < 1e-9
    assert scalar(prometheus, f'sum(gateway_requests_total{{team="{team}",status="200"}})') == 3
    assert scalar(prometheus, 'up{job="image-gateway"}') == 1


def test_prometheus_loads_and_evaluates_every_shipped_alert_rule(prometheus: str) -> None:
    shipped = yaml.safe_load(ALERTS.read_text())["groups"]
    names = {rule["alert"] for group in shipped for rule in group["rules"] if "alert" in rule}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5, verify=TLS).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = wait_until(evaluated, timeout_s=30, what="every rule evaluated without error")
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} == names

    def availability_alerts() -> list[str]:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5, verify=TLS).json()["data"]["alerts"]
        names = {a["labels"]["alertname"] for a in alerts}
        return sorted(names & {"ImageGatewayDown", "ImageGatewayAbsent"})

    # Before the first scrape `absent(up)` is true and that alert is pending; scraping clears it.
    wait_until(lambda: scalar(prometheus, 'up{job="image-gateway"}') == 1, timeout_s=30, what="scraped")
    wait_until(lambda: availability_alerts() == [], timeout_s=30, what="no availability alert")
