"""A spooled settlement is replayed only into the Redis store it belongs to.

Two gateways started from one folder share its state directory (and spool) but not their Redis.
"""

from __future__ import annotations

from pathlib import Path

from gateway.call.settle import SettleOrder
from tests.fault_tools import PRICE, ledger, lose_redis_mid_call, spent, spooled_records
from tests.support import Simulator, metric_value, ready_together, wait_until

FOREIGN = "gateway_spool_foreign_records"
REPORTED = "belong to another Redis store"


def test_a_record_spooled_for_one_store_is_never_replayed_into_another(
    redis_factory, simulator: Simulator, gateway_factory, tmp_path: Path
) -> None:
    redis_a, redis_b = redis_factory(), redis_factory()
    shared = tmp_path / "var"
    gw_a = gateway_factory(redis_a.url, simulator.url, wait_ready=False, GATEWAY_STATE_DIR=str(shared))
    gw_b = gateway_factory(redis_b.url, simulator.url, wait_ready=False, GATEWAY_STATE_DIR=str(shared))
    ready_together(gw_a, gw_b)
    key, key_id = gw_a.create_key(budget_usd="10", budget_period="total")

    responses = lose_redis_mid_call(gw_a, redis_a, key, key_id, 2)
    assert [r.status_code for r in responses] == [200, 200]
    assert spooled_records(shared) == 2

    # B replays the shared spool every second: it must keep A's records and say so.
    wait_until(lambda: metric_value(gw_b.metrics(), FOREIGN) == 2, what="B reports the foreign records")
    assert ledger(redis_b.url, key_id) == [], "A's records were replayed into B's store"
    assert spooled_records(shared) == 2

    redis_a.start()
    wait_until(lambda: spent(gw_a, key_id) == 2 * PRICE, timeout_s=20, what="A replays its own records")
    wait_until(lambda: spooled_records(shared) == 0, what="spool emptied")
    assert sorted(r["request_id"] for r in ledger(redis_a.url, key_id)) == sorted(
        r.headers["x-request-id"] for r in responses
    )
    wait_until(lambda: metric_value(gw_b.metrics(), FOREIGN) == 0, what="B's gauge back to 0")
    assert ledger(redis_b.url, key_id) == []
    # Reported once while it lasted, not every replay round.
    assert gw_b.log().count(REPORTED) == 1, gw_b.log()[-3000:]


def test_a_spool_entry_of_the_previous_release_has_no_store_and_replays_anywhere() -> None:
    entry = {
        "key_id": "k",
        "request_id": "r",
        "model": "m",
        "images": 1,
        "charge_micros": 5,
        "day": "2026-11-30",
        "month": "2026-11",
        "record": {
            "request_id": "r",
            "ts_ms": 1,
            "day": "2026-11-30",
            "team": "t",
            "key_id": "k",
            "key_name": "n",
            "model": "m",
            "n": 1,
            "images": 1,
            "upstream_images": 1,
            "unit_price_micros": 5,
            "charge_micros": 5,
            "upstream_status": 200,
            "upstream_latency_ms": 1,
            "outcome": "ok",
            "client_left": 0,
            "reconcile": 0,
        },
    }
    order = SettleOrder.from_json(entry)
    assert order.store is None
    assert SettleOrder.from_json({**entry, "store": "abc"}).store == "abc"
    assert SettleOrder.from_json(order.to_json()) == order
