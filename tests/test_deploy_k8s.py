"""Kubernetes manifests in deploy/k8s: schema-valid, and wired together the way the gateway needs.

Every manifest directly under deploy/k8s is validated in strict mode (unknown fields are errors)
by kubernetes-validate against the oldest Kubernetes the project supports and the newest one the
installed package ships schemas for. deploy/k8s/optional/ holds objects of CRDs (the Prometheus
Operator's ServiceMonitor) that have no schema there; they are checked for what they select.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from gateway.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
SETTINGS = {"GATEWAY_" + name.upper() for name in Settings.model_fields}
OLDEST_K8S = "1.30.0"  # kubernetes-validate>=1.30 (pyproject) always has it
K8S_VERSIONS = sorted({OLDEST_K8S, kv_utils.latest_version()})


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def objects() -> dict[tuple[str, str], dict]:
    out = {}
    for path in manifest_files():
        for doc in load_all(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


def one(kind: str) -> dict:
    found = [o for (k, _), o in objects().items() if k == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def container() -> dict:
    [c] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def selects(selector: dict, labels: dict) -> bool:
    """Does a label selector (matchLabels / matchExpressions) match these labels?"""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return bool(selector)


def env_config() -> dict[str, str]:
    """The environment a gateway container gets: envFrom ConfigMaps/Secrets, then env."""
    objs = objects()
    env: dict[str, str] = {}
    for src in container().get("envFrom", []):
        if "configMapRef" in src:
            env.update(objs[("ConfigMap", src["configMapRef"]["name"])]["data"])
        else:
            env.update(objs[("Secret", src["secretRef"]["name"])]["stringData"])
    for item in container().get("env", []):
        env[item["name"]] = item.get("value", "<from valueFrom>")
    return env


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes_in_strict_mode(path, version):
    docs = load_all(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{path.name} {doc['kind']}/{doc['metadata']['name']} (k8s {version}): {exc.message} "
                f"at {'.'.join(map(str, exc.path))}"
            )


def test_core_manifests_are_all_there_and_namespace_agnostic():
    kinds = {k for (k, _) in objects()}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
    } <= kinds
    for (kind, name), obj in objects().items():
        assert "namespace" not in obj["metadata"], f"{kind}/{name} pins a namespace"
    assert one("HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    assert one("PodDisruptionBudget")["apiVersion"] == "policy/v1"
    assert (K8S / "README.md").is_file()


def test_deployment_runs_gateway_serve_highly_available_and_bounded():
    dep = one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container()
    assert dep["spec"]["replicas"] >= 2
    assert c.get("command") in (None, ["gateway"]) and c["args"] == ["serve"]
    assert {p["containerPort"] for p in c["ports"]} == {8080}
    for kind in ("cpu", "memory"):
        assert c["resources"]["requests"][kind] and c["resources"]["limits"][kind], kind
    # The upgrade from the release before team budgets asks every old replica to stop first.
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert selects(dep["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "8080" and ann["prometheus.io/path"] == "/metrics"
    assert pod.get("automountServiceAccountToken") is False


def test_probes_use_readyz_for_readiness_and_healthz_for_liveness():
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}

    def target(probe):
        port = probe["httpGet"]["port"]
        return probe["httpGet"]["path"], ports.get(port, port)

    assert target(c["readinessProbe"]) == ("/readyz", 8080)
    assert target(c["livenessProbe"]) == ("/healthz", 8080)
    # liveness must not restart a pod just because Redis is down: it never uses /readyz
    assert target(c.get("startupProbe", c["livenessProbe"]))[0] == "/healthz"


def test_pod_runs_as_non_root_with_a_read_only_root_filesystem_and_writable_state_dir():
    pod = one("Deployment")["spec"]["template"]["spec"]
    c = container()
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    env = env_config()
    assert env["GATEWAY_STATE_DIR"] == "/var/lib/gateway"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/gateway"]]


def test_grace_period_outlasts_the_prestop_sleep_plus_the_upstream_timeout():
    pod = one("Deployment")["spec"]["template"]["spec"]
    c = container()
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep_s = int(command[1])
    assert sleep_s >= 5
    timeout_s = float(
        env_config().get("GATEWAY_UPSTREAM_TIMEOUT_S", Settings.model_fields["upstream_timeout_s"].default)
    )
    assert pod["terminationGracePeriodSeconds"] > timeout_s + sleep_s


def test_service_pdb_and_hpa_target_the_deployments_pods():
    dep = one("Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = one("Service")
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()) and svc["spec"]["selector"]
    [port] = svc["spec"]["ports"]
    assert port["targetPort"] in ("http", 8080)
    assert selects(one("PodDisruptionBudget")["spec"]["selector"], labels)
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable", 0) == 1 or pdb.get("minAvailable", 0) < dep["spec"]["replicas"], (
        "the PDB must still allow one pod to be evicted"
    )
    hpa = one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    [metric] = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"


def test_every_gateway_variable_set_is_a_gateway_setting_and_has_a_valid_value(monkeypatch):
    objs = objects()
    c = container()
    set_names = {e["name"] for e in c.get("env", [])}
    for src in c.get("envFrom", []):
        ref = src.get("configMapRef") or src.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in src else "Secret"
        data = objs[(kind, ref["name"])].get("data" if kind == "ConfigMap" else "stringData", {})
        assert data, f"{kind}/{ref['name']} is empty"
        set_names |= set(data)
    for (kind, _), obj in objs.items():
        if kind == "Secret":
            set_names |= set(obj.get("stringData", {}))
    unknown = {n for n in set_names if n.startswith("GATEWAY_")} - SETTINGS
    assert not unknown, f"not settings of gateway/core/settings.py: {sorted(unknown)}"
    assert all(n.startswith("GATEWAY_") for n in set_names), sorted(set_names)
    # and the gateway accepts the values as they are
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    for name, value in env_config().items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert settings.redis_url, "GATEWAY_REDIS_URL must be set, else each pod runs its own Redis"


def test_secret_is_a_template_with_placeholders_only():
    secret = one("Secret")
    assert "data" not in secret, "use stringData with placeholders, never encoded real values"
    values = secret["stringData"]
    assert {"GATEWAY_UPSTREAM_API_KEY", "GATEWAY_ADMIN_TOKEN"} <= set(values)
    for name, value in values.items():
        assert "REPLACE_ME" in value, f"{name} does not look like a placeholder"
    assert values["GATEWAY_REDIS_URL"].startswith("redis+sentinel://")


def test_prices_configmap_is_the_default_price_table_and_is_where_the_gateway_reads_it():
    c = container()
    pod = one("Deployment")["spec"]["template"]["spec"]
    env = env_config()
    prices_path = Path(env["GATEWAY_PRICES_FILE"])
    [mount] = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == prices_path.parent]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    cm = objects()[("ConfigMap", volume["configMap"]["name"])]
    items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
    key = items.get(prices_path.name, prices_path.name)
    table = yaml.safe_load(cm["data"][key])
    assert table == yaml.safe_load((REPO / "deploy" / "prices.yaml").read_text())
    assert table["models"]["doubao-seedream-4-0-250828"] == {"price_usd": "0.162"}
    for model in table["models"].values():
        assert isinstance(model["price_usd"], str) and re.fullmatch(r"\d+\.\d+", model["price_usd"])


def test_optional_servicemonitor_selects_the_service_and_its_named_port():
    docs = load_all(K8S / "optional" / "servicemonitor.yaml")
    [sm] = docs
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    assert "namespace" not in sm["metadata"]
    svc = one("Service")
    assert selects(sm["spec"]["selector"], svc["metadata"]["labels"])
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
    # the alert rules select job="image-gateway"; the operator names the job after the Service
    assert svc["metadata"]["name"] == "image-gateway"


def test_readme_explains_applying_and_redis():
    text = (K8S / "README.md").read_text()
    assert "kubectl" in text and "apply" in text
    assert "appendfsync everysec" in text and "appendonly yes" in text
    assert "redis+sentinel://[:password@]host1:26379,host2:26379/mymaster/0" in text
    assert "redis://" in text and "Cluster" in text
    # every file the README tells people to apply exists
    for name in re.findall(r"deploy/k8s/([\w./-]+\.ya?ml)", text):
        assert (K8S / name).is_file(), name


MIB = 1024 * 1024
IDLE_WORKER_BYTES = 80 * 1000 * 1000  # docs/operations.md "Sizing": a worker's idle footprint
PER_CALL_BYTES = 3 * MIB  # an answer up to 1 MiB held whole, about three copies (larger: streamed)
PARENT_BYTES = 50 * 1000 * 1000


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "K": 1000, "M": 1000**2, "G": 1000**3}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def test_the_memory_limit_holds_every_worker_with_every_call_in_flight():
    """The sizing rule of docs/operations.md, with the manifests' own numbers: workers x
    (idle + GATEWAY_MAX_INFLIGHT x 3 MiB) + the parent stays under limits.memory."""
    env = env_config()
    workers = int(env.get("GATEWAY_WORKERS", "1"))
    inflight = int(env.get("GATEWAY_MAX_INFLIGHT", str(Settings.model_fields["max_inflight"].default)))
    limit = _bytes(container()["resources"]["limits"]["memory"])
    needed = workers * (IDLE_WORKER_BYTES + inflight * PER_CALL_BYTES) + PARENT_BYTES
    assert needed <= limit, f"{workers} workers x {inflight} in flight need {needed / MIB:.0f} MiB > limit"
    sizing = (REPO / "docs" / "operations.md").read_text()
    assert "80 MB + GATEWAY_MAX_INFLIGHT × 3 MiB" in sizing
    assert f"GATEWAY_MAX_INFLIGHT={inflight}" in sizing and f"GATEWAY_WORKERS={workers}" in sizing
