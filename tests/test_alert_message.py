"""The alert's wire format, its sentence, its signature, the retry schedule and the settings:
pure functions, no processes."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from gateway.alerts import message
from gateway.alerts.sender import retry_delay_s
from gateway.core.settings import SettingsError, load_settings

FACTS = message.AlertFacts(
    scope="team",
    team="design",
    key_id="",
    key_name="",
    threshold_ppm=800_000,
    spent_micros=80_000_000,
    budget_micros=100_000_000,
    period="month",
    period_start="2026-11-01",
    at_ms=1_796_040_000_123,
)


def test_the_body_is_the_documented_json_and_the_same_bytes_every_time() -> None:
    raw = message.body("team:m2026-11:800000", FACTS)
    assert raw == message.body("team:m2026-11:800000", FACTS)
    assert json.loads(raw) == {
        "id": "team:design:m2026-11:800000",  # the team in it: every team's outbox id is alike
        "type": "budget.threshold",
        "scope": "team",
        "team": "design",
        "threshold": 0.8,
        "spent_usd": "80.000000",
        "budget_usd": "100.000000",
        "period": "month",
        "period_start": "2026-11-01",
        "at": "2026-11-30T12:00:00.123Z",
        "text": "Team design has spent $80.000000 of its $100.000000 monthly budget (80%).",
    }


def test_a_key_alert_names_the_key_and_a_jump_past_the_threshold_says_so() -> None:
    facts = message.AlertFacts(
        "key", "design", "k_1", "poster-bot", 500_000, 5_555_000, 10_000_000, "day", "2026-11-30", 0
    )
    body = json.loads(message.body("key:k_1:d2026-11-30:500000", facts))
    assert (body["id"], body["key_id"], body["key_name"]) == (
        "key:k_1:d2026-11-30:500000",
        "k_1",
        "poster-bot",
    )
    assert body["text"] == (
        "Key poster-bot of team design has spent $5.555000 of its $10.000000 daily budget (55.6%),"
        " past its 50% alert threshold."
    )


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    raw = message.body("team:m2026-11:800000", FACTS)
    expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert message.signature(b"s3cret", raw) == f"sha256={expected}"


def test_facts_are_read_as_settle_lua_writes_them() -> None:
    stored = (
        '{"scope":"team","team":"design","key_id":"","key_name":"","threshold_ppm":800000,'
        '"spent_micros":80000000,"budget_micros":100000000,"period":"month",'
        '"period_start":"2026-11-01","at_ms":1796040000123}'
    )
    assert message.AlertFacts.from_json(stored) == FACTS
    with pytest.raises(KeyError):
        message.AlertFacts.from_json('{"scope": "team"}')


def test_retries_start_within_seconds_and_back_off_to_five_minutes() -> None:
    assert [retry_delay_s(n) for n in range(1, 10)] == [2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert retry_delay_s(10_000) == 300


def test_a_webhook_url_needs_a_secret_and_an_empty_url_is_unset() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_ALERT_WEBHOOK_SECRET"):
        load_settings(alert_webhook_url="https://hooks.example.com/x")
    with pytest.raises(SettingsError, match="GATEWAY_ALERT_WEBHOOK_URL"):
        load_settings(alert_webhook_url="not a url", alert_webhook_secret="s")
    assert load_settings(alert_webhook_url="", alert_webhook_secret="").alert_webhook_url is None
    configured = load_settings(alert_webhook_url="https://hooks.example.com/x", alert_webhook_secret="s")
    assert str(configured.alert_webhook_url) == "https://hooks.example.com/x"
