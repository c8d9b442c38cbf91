"""deploy/k8s/README.md states the grace period the manifest really has, and it is long enough."""

from __future__ import annotations

import re

import yaml

from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"


def test_readme_grace_period_matches_the_manifest_and_covers_drain_and_timeout() -> None:
    deployment = next(d for d in yaml.safe_load_all((K8S / "deployment.yaml").read_text()) if d)
    pod = deployment["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    config = next(d for d in yaml.safe_load_all((K8S / "configmap.yaml").read_text()) if d)["data"]
    [container] = [c for c in pod["containers"] if c["name"] == "gateway"] or pod["containers"][:1]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    needed = pre_stop + float(config["GATEWAY_DRAIN_S"]) + float(config["GATEWAY_UPSTREAM_TIMEOUT_S"]) + 5
    assert grace > needed
    readme = (K8S / "README.md").read_text()
    pattern = r"(\d+) s grace period|terminationGracePeriodSeconds` \((\d+) s\)"
    stated = {int(plain or coded) for plain, coded in re.findall(pattern, readme)}
    assert stated == {grace}, stated
