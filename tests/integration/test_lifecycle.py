"""The Dropbox Sign lifecycle end to end: real HTTP to the service and to the simulator."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.integration.conftest import Harness


async def test_enqueue_send_and_confirm_by_callback(harness: Harness) -> None:
    created = await harness.enqueue("sr-happy", reason="deal fell through")
    assert created["status"] == "queued"
    assert created["attempts"] == 0

    assert await harness.dispatch() == 1
    row = await harness.get(created["id"])
    assert row["status"] == "confirmed"
    assert row["outcome"] == "canceled"
    assert row["confirmed_via"] == "webhook"
    assert row["attempts"] == 1
    assert row["submitted_at"] is not None
    confirm_by = datetime.fromisoformat(row["confirm_by"])
    submitted = datetime.fromisoformat(row["submitted_at"])
    assert confirm_by - submitted == timedelta(hours=1)

    causes = [(e["from_status"], e["to_status"], e["cause"]) for e in await harness.events(created["id"])]
    assert causes == [
        (None, "queued", "enqueued"),
        ("queued", "sending", "claimed"),
        ("sending", "awaiting_confirmation", "provider_queued_cancel"),
        ("awaiting_confirmation", "confirmed", "webhook"),
    ]
    stats = harness.sim_stats()
    assert stats["cancel_calls"] == 1
    assert harness.sim.get_request("dropbox_sign", "sr-happy")["state"] == "canceled"
