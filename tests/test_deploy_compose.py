"""docker-compose.yml: the local stack (gateway, Redis, Prometheus, Grafana) is wired correctly.

There is no Docker engine to `up` it here, so this reads the file the way compose does and
checks what would break at start: a mount or build path missing from the repository, a setting
the gateway does not know or would reject, Prometheus or Grafana looking for files where they
are not mounted, a service name that does not resolve.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from gateway.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SETTINGS = {"GATEWAY_" + name.upper() for name in Settings.model_fields}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def mounts(svc: dict) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["type"], v.get("source", ""), v["target"]))
            continue
        parts = v.split(":")
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((kind, source, target))
    return out


def host_path(svc: dict, container_path: str) -> Path | None:
    """The repository file a container path of `svc` comes from, through its bind mounts."""
    best = None
    path = PurePosixPath(container_path)
    for kind, source, target in mounts(svc):
        t = PurePosixPath(target)
        if kind == "bind" and (path == t or t in path.parents):
            if best is None or len(t.parts) > len(best[1].parts):
                best = (source, t)
    if best is None:
        return None
    return (REPO / best[0]).resolve() / path.relative_to(best[1])


def env_example() -> dict[str, str]:
    """Variables of .env.example, including the commented-out optional ones."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_compose_file_parses_and_has_the_four_services():
    assert set(compose()["services"]) == {"gateway", "redis", "prometheus", "grafana"}


def test_everything_compose_builds_from_or_mounts_exists():
    doc = compose()
    declared_volumes = set(doc.get("volumes") or {})
    for name, svc in doc["services"].items():
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (REPO / context / dockerfile).is_file(), f"{name}: no {context}/{dockerfile}"
        for kind, source, _target in mounts(svc):
            if kind == "bind":
                assert (REPO / source).exists(), f"{name}: mounts {source}, not in the repository"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
        env_files = svc.get("env_file") or []
        for entry in env_files if isinstance(env_files, list) else [env_files]:
            if isinstance(entry, str):
                path, required = entry, True
            else:
                path, required = entry["path"], entry.get("required", True)
            assert not required or (REPO / path).is_file(), f"{name}: env_file {path} is required but missing"


def test_gateway_reads_env_file_and_ships_an_example_of_it():
    entries = service("gateway")["env_file"]
    paths = [e if isinstance(e, str) else e["path"] for e in entries]
    assert ".env" in paths
    example = env_example()
    assert {"GATEWAY_UPSTREAM_API_KEY", "GATEWAY_ADMIN_TOKEN"} <= set(example)


def test_every_gateway_variable_set_is_a_gateway_setting():
    names = set(environment(service("gateway"))) | set(env_example())
    unknown = {n for n in names if n.startswith("GATEWAY_")} - SETTINGS
    assert not unknown, f"not settings of gateway/core/settings.py: {sorted(unknown)}"
    for name, svc in compose()["services"].items():
        if name != "gateway":
            assert not any(n.startswith("GATEWAY_") for n in environment(svc)), name


def test_gateway_accepts_the_compose_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    example = {
        k: v for k, v in env_example().items() if re.search(rf"^{k}=", ENV_EXAMPLE.read_text(), re.M)
    }  # the active lines
    for name, value in {**example, **environment(service("gateway"))}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.host == "0.0.0.0"
    prices = host_path(service("gateway"), str(settings.prices_file))
    assert prices == (REPO / "deploy" / "prices.yaml").resolve()
    table = yaml.safe_load(prices.read_text())
    assert {"doubao-seedream-4-0-250828", "doubao-seedream-4-5-251128", "doubao-seedream-5-0-260128"} <= set(
        table["models"]
    )


def test_compose_starts_the_gateway_after_a_healthy_redis_with_a_healthcheck_and_stop_grace():
    gw, redis = service("gateway"), service("redis")
    assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert "/healthz" in " ".join(gw["healthcheck"]["test"])
    assert gw["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    grace = gw["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))
    assert seconds > Settings.model_fields["upstream_timeout_s"].default, "in-flight calls finish on stop"


def test_compose_runs_redis_7_with_aof_every_second_on_a_named_volume():
    redis = service("redis")
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    command = redis["command"] if isinstance(redis["command"], str) else " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    [(kind, source, target)] = mounts(redis)
    assert kind == "volume" and target == "/data"


def test_prometheus_gets_its_config_and_the_rules_file_the_config_references():
    prom = service("prometheus")
    assert prom["image"].startswith("prom/prometheus:")
    [config_path] = [a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file=")]
    config_host = host_path(prom, config_path)
    assert config_host == (REPO / "deploy" / "prometheus" / "prometheus.yml").resolve()
    config = yaml.safe_load(config_host.read_text())
    for rule_file in config["rule_files"]:
        in_container = PurePosixPath(config_path).parent / rule_file  # relative to the config file
        host = host_path(prom, str(in_container))
        assert host is not None and host.is_file(), f"{rule_file} is not mounted into prometheus"
        assert host == (REPO / "deploy" / "prometheus" / "alerts.yml").resolve()
    # the scrape target resolves to the gateway service on its port
    targets = [
        t
        for job in config["scrape_configs"]
        if job["job_name"] == "image-gateway"
        for sc in job["static_configs"]
        for t in sc["targets"]
    ]
    host, port = targets[0].split(":")
    assert host in compose()["services"]
    assert environment(service(host)).get("GATEWAY_PORT", "8080") == port


@pytest.mark.parametrize("kind", ["datasources", "dashboards"])
def test_grafana_gets_its_provisioning_and_the_dashboards(kind):
    grafana = service("grafana")
    assert grafana["image"].startswith("grafana/grafana:")
    folder = host_path(grafana, f"/etc/grafana/provisioning/{kind}")
    assert folder == (REPO / "deploy" / "grafana" / "provisioning" / kind).resolve()
    files = sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml"))
    assert files, f"no {kind} provisioning file"
    for f in files:
        doc = yaml.safe_load(f.read_text())
        if kind == "datasources":
            for ds in doc["datasources"]:
                host, port = re.fullmatch(r"http://([\w-]+):(\d+)/?", ds["url"]).groups()
                assert host in compose()["services"] and port == "9090"
        else:
            for provider in doc["providers"]:
                dashboards = host_path(grafana, provider["options"]["path"])
                assert dashboards == (REPO / "deploy" / "grafana" / "dashboards").resolve()
                assert (dashboards / "image-gateway.json").is_file()
