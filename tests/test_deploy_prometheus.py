"""Monitoring as shipped: Prometheus config and alert rules, and the Grafana dashboard.

Real tools: promtool (from scripts/fetch-prometheus.sh, found in .tools/bin first, then PATH)
checks the config and the rules and runs unit tests of the alerts on synthetic series. The small
PromQL reader in tests/promql.py (its tests are at the end of this file) extracts every metric
name from the alert expressions and the dashboard's queries, and each must be one the gateway
exports: read from ``gateway.metrics.REGISTRY`` and, for the documented contract, from the table
below.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from tests.prometheus_tools import ALERTS, PROM_CONFIG, PROM_DIR, REPO, find_tool
from tests.promql import label_values_query, parse_promql

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "image-gateway.json"

# The metrics contract of the gateway: family name -> (type, label names).
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "gateway_requests": ("counter", frozenset({"model", "team", "status"})),
    "gateway_request_duration_seconds": ("histogram", frozenset({"model"})),
    "gateway_upstream_duration_seconds": ("histogram", frozenset({"model", "outcome"})),
    "gateway_images": ("counter", frozenset({"model", "team"})),
    "gateway_spend_usd": ("counter", frozenset({"model", "team"})),
    "gateway_rejections": ("counter", frozenset({"team", "reason"})),
    "gateway_upstream_errors": ("counter", frozenset({"model", "reason"})),
    "gateway_inflight_requests": ("gauge", frozenset()),
    "gateway_redis_errors": ("counter", frozenset()),
    "gateway_spool_pending_records": ("gauge", frozenset()),
    "gateway_build_info": ("gauge", frozenset({"version"})),
    "gateway_budget_used_ratio": ("gauge", frozenset({"team", "key_name"})),
    "gateway_late_settlements_over_budget": ("counter", frozenset({"team", "key_name"})),
    "gateway_over_delivered_images": ("counter", frozenset({"model", "team"})),
    "gateway_team_budget_used_ratio": ("gauge", frozenset({"team"})),
    "gateway_budget_exhausted": ("gauge", frozenset({"team", "key_name"})),
    "gateway_team_budget_exhausted": ("gauge", frozenset({"team"})),
    "gateway_alert_deliveries": ("counter", frozenset({"outcome"})),
    "gateway_alerts_pending": ("gauge", frozenset()),
    "gateway_alert_oldest_pending_seconds": ("gauge", frozenset()),
    "gateway_channel_calls": ("counter", frozenset({"channel", "outcome"})),
    "gateway_channel_failovers": ("counter", frozenset({"channel", "outcome"})),
    "gateway_channel_upstream_duration_seconds": ("histogram", frozenset({"channel"})),
    "gateway_channel_resting": ("gauge", frozenset({"channel"})),
    "gateway_model_channels_available": ("gauge", frozenset({"model"})),
}
UPSTREAM_REASONS = {
    "timeout",
    "connect",
    "5xx",
    "4xx",
    "auth",
    "insufficient_balance",
    "content_safety",
    "rate_limited",
    "bad_response",
}
REJECTION_REASONS = {
    "invalid_key",
    "revoked_key",
    "expired_key",
    "bad_request",
    "model_not_found",
    "model_not_allowed",
    "budget_exceeded",
    "team_budget_exceeded",
    "images_per_day_exceeded",
    "team_images_per_day_exceeded",
    "rate_limited",
    "concurrency_exceeded",
    "redis_unavailable",
    "no_channel",
}
# Known values of enumerated labels, per series: a matcher on another value never matches.
LABEL_VALUES: dict[tuple[str, str], set[str]] = {
    ("gateway_upstream_errors_total", "reason"): UPSTREAM_REASONS,
    ("gateway_upstream_duration_seconds_bucket", "outcome"): UPSTREAM_REASONS | {"ok"},
    ("gateway_upstream_duration_seconds_count", "outcome"): UPSTREAM_REASONS | {"ok"},
    ("gateway_upstream_duration_seconds_sum", "outcome"): UPSTREAM_REASONS | {"ok"},
    ("gateway_rejections_total", "reason"): REJECTION_REASONS,
    ("gateway_alert_deliveries_total", "outcome"): {"delivered", "failed", "expired"},
    ("gateway_channel_calls_total", "outcome"): UPSTREAM_REASONS
    | {"ok", "stream_broken", "stream_stalled", "too_large"},
    ("gateway_channel_failovers_total", "outcome"): {
        "connect",
        "timeout",
        "auth",
        "insufficient_balance",
        "rate_limited",
        "5xx",
    },
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
BUILTIN_SERIES = {"up": frozenset(TARGET_LABELS), "scrape_duration_seconds": frozenset(TARGET_LABELS)}


def series_of(name: str, kind: str) -> set[str]:
    """Series names a metric family shows in the text exposition."""
    if kind == "counter":
        return {name + "_total", name + "_created"}
    if kind == "histogram":
        return {name + s for s in ("_bucket", "_sum", "_count", "_created")}
    if kind == "summary":
        return {name, name + "_sum", name + "_count", name + "_created"}
    if kind == "info":
        return {name + "_info"}
    if kind == "gaugehistogram":
        return {name + s for s in ("_bucket", "_gsum", "_gcount")}
    return {name}


def contract_series() -> dict[str, frozenset[str]]:
    """Series name -> its labels (including `le` for buckets), from the contract table."""
    out: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in CONTRACT.items():
        for s in series_of(name, kind):
            if s.endswith("_created"):
                continue
            out[s] = labels | {"le"} if s.endswith("_bucket") else labels
    return out


# --------------------------------------------------------------------------------------------
# What the shipped files query.


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    out = []

    def walk(panels):
        for p in panels:
            out.append(p)
            walk(p.get("panels", []))

    walk(dashboard()["panels"])
    return out


def used_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert expression and every dashboard query."""
    out = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    for p in dashboard_panels():
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} target {t.get('refId')}", t["expr"]))
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            lv = label_values_query(query)
            assert lv, f"variable {v['name']}: expected label_values(metric, label), got {query!r}"
            out.append((f"variable ${v['name']}", lv[0]))
    return out


def used_series() -> dict[str, set[str]]:
    """Series name -> where it is used."""
    out: dict[str, set[str]] = {}
    for where, expr in used_queries():
        for name in parse_promql(expr).names:
            out.setdefault(name, set()).add(where)
    return out


# --------------------------------------------------------------------------------------------
# Tools


@pytest.fixture(scope="module")
def promtool() -> str:
    return find_tool("promtool")


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------------------------
# promtool


def test_promtool_accepts_the_alert_rules(promtool):
    res = run([promtool, "check", "rules", str(ALERTS)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout


def test_promtool_accepts_the_prometheus_config_and_finds_the_rules(promtool):
    res = run([promtool, "check", "config", str(PROM_CONFIG)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 1 rule files found" in res.stdout
    assert str(ALERTS.relative_to(REPO)) in res.stdout or ALERTS.name in res.stdout


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    '"$team"': '".*"',
    '"$model"': '".*"',
}


def test_promtool_accepts_every_dashboard_query(promtool, tmp_path):
    """Each panel query, with Grafana's variables filled in, is valid PromQL for Prometheus."""
    rules = []
    for p in dashboard_panels():
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr.replace('"$1"', ""), f"{p['title']}: unknown variable in {expr}"
            rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = run([promtool, "check", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout


def test_prometheus_config_targets_the_compose_gateway_and_loads_the_alert_rules():
    config = yaml.safe_load(PROM_CONFIG.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    job = jobs["image-gateway"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["gateway:8080"]
    assert [(PROM_DIR / f).resolve() for f in config["rule_files"]] == [ALERTS.resolve()]


# Alert unit tests: the rules with their annotations removed (promtool compares annotations
# verbatim; their templates are checked by `promtool check rules` above), fed synthetic series.
GW = {"job": "image-gateway", "instance": "gw-1:8080"}
UP_ERR = "gateway_upstream_errors_total"
UP_CALLS = "gateway_upstream_duration_seconds_count"
REQ_BUCKET = "gateway_request_duration_seconds_bucket"


def series(metric: str, values: str, **labels: str) -> dict:
    """An input series of a scraped gateway instance (job and instance labels added)."""
    text = ", ".join(f'{k}="{v}"' for k, v in {**GW, **labels}.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def counts(minutes: int, events: Iterable[int]) -> str:
    """A counter's values, one a minute, that goes up by one at each minute in ``events``."""
    at = sorted(events)
    return " ".join(str(sum(1 for e in at if e <= m)) for m in range(minutes + 1))


def expect(at: str, alert: str, *label_sets: dict) -> dict:
    """At `at`, `alert` is firing exactly once per label set given (none: it is not firing)."""
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": ls} for ls in label_sets]}


ALL_ALERTS = (
    "ImageGatewayDown",
    "ImageGatewayAbsent",
    "ImageGatewayUpstreamErrorRateHigh",
    "ImageGatewayUpstreamErrorRateCritical",
    "ImageGatewayUpstreamAccountBroken",
    "ImageGatewayLatencyP95High",
    "ImageGatewayRedisErrors",
    "ImageGatewayRejectingRedisUnavailable",
    "ImageGatewaySpoolPending",
    "ImageGatewayTeamNearBudget",
    "ImageGatewayKeyNearBudget",
    "ImageGatewayTeamBudgetExhausted",
    "ImageGatewayBudgetRefusalsSustained",
    "ImageGatewayBudgetOverspent",
    "ImageGatewayUpstreamOverDelivered",
    "ImageGatewayAlertWebhookFailing",
    "ImageGatewayChannelResting",
    "ImageGatewayModelWithoutChannel",
    "ImageGatewayChannelAccountBroken",
)
ALERT_TESTS = [
    {  # a healthy gateway: traffic, fast answers, some prompts refused by content safety -> quiet
        "interval": "1m",
        "input_series": [
            series("up", "1x30"),
            series(UP_CALLS, "0+100x30", model="m", outcome="ok"),
            series(UP_ERR, "0+30x30", model="m", reason="content_safety"),
            series(REQ_BUCKET, "0+100x30", model="m", le="30"),
            series(REQ_BUCKET, "0+100x30", model="m", le="+Inf"),
            series("gateway_redis_errors_total", "0x30"),
            series("gateway_spool_pending_records", "0x30"),
            series("gateway_budget_used_ratio", "0.5x30", team="t", key_name="k"),
            series("gateway_team_budget_used_ratio", "0.6x30", team="t"),
            series("gateway_team_budget_exhausted", "0x30", team="t"),
            series("gateway_rejections_total", "0 1 1x28", team="t", reason="team_budget_exceeded"),
            series("gateway_alert_deliveries_total", "0+1x30", outcome="delivered"),
            series("gateway_alert_deliveries_total", "0x30", outcome="failed"),
            series("gateway_over_delivered_images_total", "0x30", model="m", team="t"),
            series("gateway_channel_calls_total", "0+100x30", channel="gogo", outcome="ok"),
            series("gateway_channel_calls_total", "0+2x30", channel="gogo", outcome="rate_limited"),
            series("gateway_channel_resting", "0x30", channel="gogo"),
            series("gateway_model_channels_available", "1x30", model="m"),
        ],
        "alert_rule_test": [expect("25m", name) for name in ALL_ALERTS],
    },
    {  # the target stops answering: pages after 2 minutes
        "interval": "1m",
        "input_series": [series("up", "1 1 0x20")],
        "alert_rule_test": [
            expect("3m", "ImageGatewayDown"),
            expect("5m", "ImageGatewayDown", {"severity": "critical", **GW}),
        ],
    },
    {  # no target at all
        "interval": "1m",
        "input_series": [{"series": 'up{job="other", instance="x:1"}', "values": "1x30"}],
        "alert_rule_test": [
            expect("15m", "ImageGatewayAbsent", {"severity": "warning", "job": "image-gateway"}),
        ],
    },
    {  # one auth error from the upstream pages at once and clears 5 minutes later
        "interval": "1m",
        "input_series": [
            series(UP_ERR, "0 0 1x20", model="m", reason="auth"),
            series(UP_ERR, "0x20", model="m", reason="insufficient_balance"),
        ],
        "alert_rule_test": [
            expect(
                "4m",
                "ImageGatewayUpstreamAccountBroken",
                {"severity": "critical", "model": "m", "reason": "auth"},
            ),
            expect("15m", "ImageGatewayUpstreamAccountBroken"),
        ],
    },
    {  # model a: 10% of calls fail (warning); b: 40% (warning and critical);
        # c: 50% refused by content safety (users' prompts: no alert)
        "interval": "1m",
        "input_series": [
            series(UP_CALLS, "0+90x30", model="a", outcome="ok"),
            series(UP_CALLS, "0+10x30", model="a", outcome="5xx"),
            series(UP_ERR, "0+10x30", model="a", reason="5xx"),
            series(UP_CALLS, "0+60x30", model="b", outcome="ok"),
            series(UP_CALLS, "0+40x30", model="b", outcome="timeout"),
            series(UP_ERR, "0+40x30", model="b", reason="timeout"),
            series(UP_CALLS, "0+50x30", model="c", outcome="ok"),
            series(UP_CALLS, "0+50x30", model="c", outcome="content_safety"),
            series(UP_ERR, "0+50x30", model="c", reason="content_safety"),
        ],
        "alert_rule_test": [
            expect("5m", "ImageGatewayUpstreamErrorRateHigh"),
            expect(
                "15m",
                "ImageGatewayUpstreamErrorRateHigh",
                {"severity": "warning", "model": "a"},
                {"severity": "warning", "model": "b"},
            ),
            expect("15m", "ImageGatewayUpstreamErrorRateCritical", {"severity": "critical", "model": "b"}),
        ],
    },
    {  # model slow: every request takes 60-120 s -> p95 about 117 s; fast: under 30 s
        "interval": "1m",
        "input_series": [
            *[
                series(REQ_BUCKET, v, model="slow", le=le)
                for le, v in (
                    ("30", "0x30"),
                    ("60", "0x30"),
                    ("120", "0+10x30"),
                    ("300", "0+10x30"),
                    ("+Inf", "0+10x30"),
                )
            ],
            *[
                series(REQ_BUCKET, "0+10x30", model="fast", le=le)
                for le in ("30", "60", "120", "300", "+Inf")
            ],
        ],
        "alert_rule_test": [
            expect("20m", "ImageGatewayLatencyP95High", {"severity": "warning", "model": "slow"}),
        ],
    },
    {  # Redis keeps failing: errors, refused requests, records piling up in the spool
        "interval": "1m",
        "input_series": [
            series("gateway_redis_errors_total", "0+3x30"),
            series("gateway_rejections_total", "0+5x30", team="t", reason="redis_unavailable"),
            series("gateway_rejections_total", "0+5x30", team="t", reason="budget_exceeded"),
            series("gateway_spool_pending_records", "0 4x30"),
        ],
        "alert_rule_test": [
            expect("12m", "ImageGatewayRedisErrors", {"severity": "warning", "instance": GW["instance"]}),
            expect("5m", "ImageGatewayRejectingRedisUnavailable", {"severity": "critical"}),
            expect("10m", "ImageGatewaySpoolPending"),
            expect("20m", "ImageGatewaySpoolPending", {"severity": "warning", "instance": GW["instance"]}),
        ],
    },
    {  # team t1's key "ci" has spent 95% of its budget; t2's key of the same name 50%
        "interval": "1m",
        "input_series": [
            series("gateway_budget_used_ratio", "0.95x20", team="t1", key_name="ci"),
            series("gateway_budget_used_ratio", "0.5x20", team="t2", key_name="ci"),
        ],
        "alert_rule_test": [
            expect("10m", "ImageGatewayKeyNearBudget", {"severity": "info", "team": "t1", "key_name": "ci"}),
            expect("10m", "ImageGatewayTeamNearBudget"),  # a key's budget is not its team's
        ],
    },
    {  # team t1 has spent 95% of its team budget, t2 50%
        "interval": "1m",
        "input_series": [
            series("gateway_team_budget_used_ratio", "0.95x20", team="t1"),
            series("gateway_team_budget_used_ratio", "0.5x20", team="t2"),
        ],
        "alert_rule_test": [
            expect("3m", "ImageGatewayTeamNearBudget"),
            expect("10m", "ImageGatewayTeamNearBudget", {"severity": "info", "team": "t1"}),
            expect("10m", "ImageGatewayKeyNearBudget"),
        ],
    },
    {  # team tiny's budget is used up at 81% (what is left cannot cover a call) from minute 2;
        # big has budget left
        "interval": "1m",
        "input_series": [
            series("gateway_team_budget_used_ratio", "0.81x30", team="tiny"),
            series("gateway_team_budget_exhausted", "0 0 1x28", team="tiny"),
            series("gateway_team_budget_exhausted", "0x30", team="big"),
        ],
        "alert_rule_test": [
            expect("2m", "ImageGatewayTeamBudgetExhausted"),
            expect("4m", "ImageGatewayTeamBudgetExhausted", {"severity": "info", "team": "tiny"}),
            expect("4m", "ImageGatewayTeamNearBudget"),  # 81%: only the refusals say it is used up
        ],
    },
    {  # tiny's calls are refused for its team budget every minute for half an hour; one refusal
        # of big's key is no pattern
        "interval": "1m",
        "input_series": [
            series("gateway_rejections_total", "0+2x40", team="tiny", reason="team_budget_exceeded"),
            series("gateway_rejections_total", "0 1 1x38", team="big", reason="budget_exceeded"),
        ],
        "alert_rule_test": [
            expect("10m", "ImageGatewayBudgetRefusalsSustained"),
            expect(
                "30m",
                "ImageGatewayBudgetRefusalsSustained",
                {"severity": "warning", "team": "tiny", "reason": "team_budget_exceeded"},
            ),
        ],
    },
    {  # the webhook fails every attempt from minute 5 (one every 5 minutes at most: backed off),
        # after earlier deliveries; one success at minute 50 clears it
        "interval": "1m",
        "input_series": [
            series("gateway_alert_deliveries_total", counts(70, [1, 2, 3, 50]), outcome="delivered"),
            series("gateway_alert_deliveries_total", counts(70, range(6, 50, 5)), outcome="failed"),
        ],
        "alert_rule_test": [
            expect("20m", "ImageGatewayAlertWebhookFailing"),
            expect("40m", "ImageGatewayAlertWebhookFailing", {"severity": "warning"}),
            expect("55m", "ImageGatewayAlertWebhookFailing"),
        ],
    },
    {  # channel ark rests most of the time from minute 2 (a minute of probation between rests);
        # gogo rested once, for a minute, and recovered
        "interval": "1m",
        "input_series": [
            series(
                "gateway_channel_resting", "0 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 1 1 1x10", channel="ark"
            ),
            series("gateway_channel_resting", "0 0 0 1 0x30", channel="gogo"),
        ],
        "alert_rule_test": [
            expect("5m", "ImageGatewayChannelResting"),
            expect("20m", "ImageGatewayChannelResting", {"severity": "warning", "channel": "ark"}),
        ],
    },
    {  # every channel serving model m rests from minute 3 on both instances; n keeps one channel
        "interval": "1m",
        "input_series": [
            series("gateway_model_channels_available", "2 2 2 0x20", model="m"),
            series("gateway_model_channels_available", "2 2 2 0x20", model="m", instance="gw-2:8080"),
            series("gateway_model_channels_available", "1 1 1 1x20", model="n"),
        ],
        "alert_rule_test": [
            expect("4m", "ImageGatewayModelWithoutChannel"),
            expect("6m", "ImageGatewayModelWithoutChannel", {"severity": "critical", "model": "m"}),
        ],
    },
    {  # channel ark's balance runs out at minute 2 (its calls move on to gogo; callers see nothing)
        "interval": "1m",
        "input_series": [
            series(
                "gateway_channel_calls_total", "0 0 1 2 3x20", channel="ark", outcome="insufficient_balance"
            ),
            series("gateway_channel_calls_total", "0+5x25", channel="gogo", outcome="ok"),
            series("gateway_upstream_errors_total", "0x25", model="m", reason="insufficient_balance"),
        ],
        "alert_rule_test": [
            expect(
                "4m",
                "ImageGatewayChannelAccountBroken",
                {"severity": "warning", "channel": "ark", "outcome": "insufficient_balance"},
            ),
            expect("4m", "ImageGatewayUpstreamAccountBroken"),  # no call failed for it
            expect("15m", "ImageGatewayChannelAccountBroken"),
        ],
    },
    {  # one late settlement took team t1's key past its budget; t2's counter stays at 0
        "interval": "1m",
        "input_series": [
            series("gateway_late_settlements_over_budget_total", "0 0 1x20", team="t1", key_name="ci"),
            series("gateway_late_settlements_over_budget_total", "0x20", team="t2", key_name="web"),
        ],
        "alert_rule_test": [
            expect("1m", "ImageGatewayBudgetOverspent"),
            expect(
                "5m", "ImageGatewayBudgetOverspent", {"severity": "warning", "team": "t1", "key_name": "ci"}
            ),
        ],
    },
    {  # the upstream sent team t1 9,999 images beyond one asked for; t2's counter stays at 0;
        # it clears an hour later
        "interval": "1m",
        "input_series": [
            series("gateway_over_delivered_images_total", "0 0 9999x90", model="m", team="t1"),
            series("gateway_over_delivered_images_total", "0x90", model="m", team="t2"),
        ],
        "alert_rule_test": [
            expect("1m", "ImageGatewayUpstreamOverDelivered"),
            expect(
                "5m", "ImageGatewayUpstreamOverDelivered", {"severity": "warning", "team": "t1", "model": "m"}
            ),
            expect("80m", "ImageGatewayUpstreamOverDelivered"),
        ],
    },
]


def test_alerts_fire_on_the_situations_they_describe_and_stay_quiet_otherwise(promtool, tmp_path):
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts-no-annotations.yml"
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    tests = tmp_path / "alerts-test.yml"
    tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules)],
                "evaluation_interval": "1m",
                "tests": ALERT_TESTS,
            },
            sort_keys=False,
        )
    )
    res = run([promtool, "test", "rules", str(tests)])
    assert res.returncode == 0, res.stdout + res.stderr
    fired = {t["alertname"] for case in ALERT_TESTS for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == {r["alert"] for r in alert_rules()} == set(ALL_ALERTS), "each alert has a firing case"


def test_every_alert_tells_ops_how_bad_it_is_and_what_to_do():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        ann = r["annotations"]
        assert ann["summary"].strip() and "\n" not in ann["summary"].strip(), r["alert"]
        assert "What to do:" in ann["description"], f"{r['alert']}: description has no runbook steps"
        assert len(ann["description"].split("What to do:")[1].split()) >= 8, r["alert"]


def test_the_required_alerts_exist():
    by_expr = {r["alert"]: parse_promql(r["expr"]) for r in alert_rules()}

    def alerts_on(series: str, **matcher: str) -> list[str]:
        out = []
        for name, q in by_expr.items():
            for metric, ms in q.metrics:
                if metric == series and all(
                    any(lab == k and v in val for lab, _, val in ms) for k, v in matcher.items()
                ):
                    out.append(name)
        return out

    assert alerts_on("up")
    assert alerts_on("gateway_upstream_errors_total", reason="auth")
    assert alerts_on("gateway_upstream_errors_total", reason="insufficient_balance")
    ratio = set(alerts_on("gateway_upstream_errors_total"))
    assert ratio & set(alerts_on("gateway_upstream_duration_seconds_count"))
    assert any(
        "histogram_quantile" in by_expr[a].functions
        for a in alerts_on("gateway_request_duration_seconds_bucket")
    )
    assert alerts_on("gateway_redis_errors_total")
    assert alerts_on("gateway_spool_pending_records")
    assert alerts_on("gateway_budget_used_ratio")
    assert alerts_on("gateway_team_budget_used_ratio")
    assert alerts_on("gateway_alert_deliveries_total", outcome="failed")
    assert alerts_on("gateway_over_delivered_images_total")
    [budget] = [r for r in alert_rules() if "gateway_budget_used_ratio" in r["expr"]]
    assert "> 0.9" in budget["expr"]
    pages = {r["alert"] for r in alert_rules() if r["labels"]["severity"] == "critical"}
    assert set(alerts_on("gateway_upstream_errors_total", reason="auth")) <= pages
    assert set(alerts_on("up")) & pages


# --------------------------------------------------------------------------------------------
# The PromQL reader itself (tests/promql.py)


def test_promql_reader_extracts_metrics_and_ignores_functions_labels_and_durations():
    q = parse_promql(
        "histogram_quantile(0.95, sum by (le, model) (rate(gateway_request_duration_seconds_bucket"
        '{model=~"$model", team!="x"}[$__rate_interval])))'
    )
    assert q.names == {"gateway_request_duration_seconds_bucket"}
    assert q.grouping == {"le", "model"}
    assert q.functions == {"histogram_quantile", "sum", "rate"}
    assert q.metrics[0][1] == [("model", "=~", "$model"), ("team", "!=", "x")]

    q = parse_promql(
        'sum(rate(gateway_upstream_errors_total{reason!="content_safety"}[5m] offset 1h)) without (instance)'
        " / on (model) group_left (team)"
        " sum by (model) (increase(gateway_upstream_duration_seconds_count[5m:1m]))"
        ' > bool 0.05 and up{job="image-gateway"} == 1 or vector(0)'
    )
    assert q.names == {"gateway_upstream_errors_total", "gateway_upstream_duration_seconds_count", "up"}
    assert q.grouping == {"instance", "model", "team"}
    assert parse_promql('{__name__="gateway_images_total", team="a"}').metrics == [
        ("gateway_images_total", [("team", "=", "a")])
    ]
    assert parse_promql('label_replace(gateway_build_info, "v", "$1", "version", "(.*)")').names == {
        "gateway_build_info"
    }
    assert parse_promql("sum(gateway_inflight_requests) * 60 / 1e3").names == {"gateway_inflight_requests"}
    with pytest.raises(ValueError, match="unknown PromQL function"):
        parse_promql("histogram_quantil(0.9, x_bucket)")
    lv = label_values_query("label_values(gateway_requests_total, team)")
    assert lv == ("gateway_requests_total", "team")


def test_promql_reader_finds_exactly_the_contract_series_in_a_query_that_uses_them_all():
    expr = (
        " + ".join(f'sum(rate({s}{{job="image-gateway"}}[5m]))' for s in sorted(contract_series()))
        + " + sum(up) + count(gateway_budget_used_ratio > 0.9)"
    )
    assert parse_promql(expr).names == set(contract_series()) | {"up"}


def test_dashboards_and_alerts_use_only_contract_metrics_labels_and_values():
    known = contract_series() | BUILTIN_SERIES
    unknown = {name: sorted(where) for name, where in used_series().items() if name not in known}
    assert not unknown, f"metrics the gateway does not export: {unknown}"
    for where, expr in used_queries():
        q = parse_promql(expr)
        labels = set().union(*(known[n] for n in q.names)) | TARGET_LABELS
        assert q.grouping <= labels, f"{where}: grouping by {q.grouping - labels}, not a label of {q.names}"
        for name, ms in q.metrics:
            for label, op, value in ms:
                assert label in known[name] | TARGET_LABELS, f"{where}: {name} has no label {label}"
                allowed = LABEL_VALUES.get((name, label))
                if allowed and "$" not in value:
                    values = value.split("|") if op in ("=~", "!~") else [value]
                    never = set(values) - allowed
                    assert not never, f"{where}: {name}{{{label}}} is never {never}"


def test_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    for p in panels:
        assert p.get("targets"), f"panel {p['title']} has no query"
        for t in [p, *p["targets"]]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    # team and model variables come from the gateway's own series
    for name in ("team", "model"):
        selector, label = label_values_query(variables[name]["query"]["query"])
        assert label == name
        [metric] = parse_promql(selector).names
        assert label in contract_series()[metric], f"${name}: {metric} has no label {label}"


def test_dashboard_shows_what_operators_asked_for():
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dashboard_panels()}
    everything = " ".join(exprs.values())

    def panel_with(*needles: str) -> bool:
        return any(all(n in e for n in needles) for e in exprs.values())

    assert panel_with("gateway_requests_total", "by (status)")
    assert panel_with("gateway_requests_total", 'status=~"5..')
    for quantile in ("0.5", "0.95", "0.99"):
        q = f"histogram_quantile({quantile}, sum by (le) (rate(gateway_request_duration_seconds_bucket"
        assert q in everything
    assert panel_with("gateway_upstream_errors_total", "by (reason)")
    assert panel_with("histogram_quantile", "gateway_upstream_duration_seconds_bucket")
    for metric in ("gateway_images_total", "gateway_spend_usd_total"):
        assert panel_with(metric, "by (team)") and panel_with(metric, "by (model)")
    assert panel_with("gateway_rejections_total", "by (reason)")
    for metric in (
        "gateway_inflight_requests",
        "gateway_redis_errors_total",
        "gateway_spool_pending_records",
    ):
        assert panel_with(metric)
    assert panel_with("gateway_budget_used_ratio", "by (team, key_name)")
    assert panel_with("gateway_team_budget_used_ratio", "by (team)")
    assert panel_with("gateway_alert_deliveries_total", "by (outcome)")
    assert panel_with("gateway_channel_calls_total", "by (channel, outcome)")
    assert panel_with("gateway_channel_failovers_total", "by (channel, outcome)")
    assert panel_with("histogram_quantile", "gateway_channel_upstream_duration_seconds_bucket", "channel")
    assert panel_with("gateway_channel_resting", "by (channel)")
    assert panel_with("gateway_model_channels_available", "by (model)")


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards_folder():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [prom] = ds["datasources"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"
    assert prom["isDefault"] is True
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    [provider] = prov["providers"]
    assert provider["type"] == "file"
    # docker-compose.yml mounts deploy/grafana/dashboards there (checked in test_deploy_compose.py)
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


# --------------------------------------------------------------------------------------------
# Against the gateway itself


def exported_series() -> set[str]:
    """Series names the gateway's registry exposes, from gateway.metrics.REGISTRY."""
    from gateway.core.metrics import REGISTRY  # provided by the gateway; this test must not skip

    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= series_of(family.name, family.type)
        names |= {s.name for s in family.samples}
    return names


def test_dashboards_and_alerts_use_only_metrics_the_gateway_exports():
    exported = exported_series() | set(BUILTIN_SERIES)
    missing = {name: sorted(where) for name, where in used_series().items() if name not in exported}
    assert not missing, f"queried but not exported by gateway.metrics.REGISTRY: {missing}"


def test_the_gateway_exports_every_metric_of_the_contract():
    missing = set(contract_series()) - exported_series()
    assert not missing, f"gateway.metrics.REGISTRY lacks {sorted(missing)}"
