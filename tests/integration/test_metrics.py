"""/metrics over real HTTP, parsed with prometheus_client's own text parser: the gauges of
open cancellations, the time to a terminal status, and webhook rejections move with what
happened."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.web import keys
from tests.integration.conftest import Harness


async def scrape(harness: Harness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, by name and labels."""
    response = await harness.client.get("/metrics")
    assert response.status == 200
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[name, frozenset(labels.items())]


async def read_gauges(harness: Harness) -> None:
    await harness.app[keys.GAUGES].run_once()


async def test_gauges_follow_the_queue_at_each_reading_not_each_scrape(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    await harness.enqueue("sr-g1")
    await harness.enqueue("sr-g2")
    await read_gauges(harness)
    samples = await scrape(harness)
    assert value(samples, "orchestrator_queue_depth", provider="dropbox_sign", due="now") == 2
    assert value(samples, "orchestrator_queue_depth", provider="dropbox_sign", due="later") == 0
    assert value(samples, "orchestrator_queue_depth", provider="truto", due="now") == 0
    assert value(samples, "orchestrator_awaiting_confirmation", provider="dropbox_sign") == 0
    read_at = value(samples, "orchestrator_gauges_read_timestamp_seconds")
    assert read_at == harness.clock.now().timestamp()

    await harness.enqueue("sr-g3")
    samples = await scrape(harness)  # a scrape does not count: the last reading stands
    assert value(samples, "orchestrator_queue_depth", provider="dropbox_sign", due="now") == 2

    await harness.dispatch()  # every callback dropped: all three await confirmation
    await read_gauges(harness)
    samples = await scrape(harness)
    assert value(samples, "orchestrator_queue_depth", provider="dropbox_sign", due="now") == 0
    assert value(samples, "orchestrator_awaiting_confirmation", provider="dropbox_sign") == 3
    assert value(samples, "orchestrator_confirmation_overdue", provider="dropbox_sign") == 0

    harness.advance(3601)
    await read_gauges(harness)
    samples = await scrape(harness)
    assert value(samples, "orchestrator_confirmation_overdue", provider="dropbox_sign") == 3

    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    await harness.sweep()  # overdue rows go back to the queue, due now
    await read_gauges(harness)
    samples = await scrape(harness)
    assert value(samples, "orchestrator_confirmation_overdue", provider="dropbox_sign") == 0
    assert value(samples, "orchestrator_awaiting_confirmation", provider="dropbox_sign") == 0
    assert value(samples, "orchestrator_queue_depth", provider="dropbox_sign", due="now") == 3

    await harness.dispatch()  # the status checks fail: each retry is scheduled later
    await read_gauges(harness)
    samples = await scrape(harness)
    assert value(samples, "orchestrator_queue_depth", provider="dropbox_sign", due="now") == 0
    assert value(samples, "orchestrator_queue_depth", provider="dropbox_sign", due="later") == 3
    assert value(samples, "orchestrator_sending", provider="dropbox_sign") == 0


async def test_time_to_terminal_is_observed_where_each_end_is_recorded(harness: Harness) -> None:
    histogram = "orchestrator_time_to_terminal_seconds"
    canceled = {"provider": "dropbox_sign", "status": "confirmed", "outcome": "canceled"}

    # The dispatcher records the end: the provider answers 410, already canceled.
    harness.sim.seed_request("dropbox_sign", "sr-gone", "canceled")
    await harness.enqueue("sr-gone")
    harness.advance(40)
    await harness.dispatch()
    samples = await scrape(harness)
    assert value(samples, f"{histogram}_count", **canceled) == 1
    assert value(samples, f"{histogram}_sum", **canceled) == 40
    assert value(samples, f"{histogram}_bucket", **canceled, le="30.0") == 0
    assert value(samples, f"{histogram}_bucket", **canceled, le="60.0") == 1

    # The dispatcher again: the status check that the cancel's callback prompted.
    hooked = await harness.enqueue("sr-hooked")
    harness.advance(2)
    await harness.dispatch()
    assert (await harness.get(hooked["id"]))["confirmed_via"] == "reconciliation"
    samples = await scrape(harness)
    assert value(samples, f"{histogram}_count", **canceled) == 2
    assert value(samples, f"{histogram}_sum", **canceled) == 42

    # An operator records the end: abandon.
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    stuck = await harness.enqueue("sr-stuck")
    await harness.dispatch()
    harness.advance(3600)
    response = await harness.client.post(
        f"/v1/cancellations/{stuck['id']}/abandon", json={"reason": "signed on paper"}
    )
    assert response.status == 200, await response.text()
    samples = await scrape(harness)
    abandoned = {"provider": "dropbox_sign", "status": "failed", "outcome": "none"}
    assert value(samples, f"{histogram}_count", **abandoned) == 1
    assert value(samples, f"{histogram}_sum", **abandoned) == 3600
    assert value(samples, f"{histogram}_bucket", **abandoned, le="+Inf") == 1


async def test_webhook_rejections_are_counted_by_provider_and_reason(harness: Harness) -> None:
    for _ in range(2):
        response = await harness.client.post(
            "/webhooks/dropbox_sign", data=b"{}", headers={"Content-Type": "application/json"}
        )
        assert response.status >= 400
    response = await harness.client.post(
        "/webhooks/truto",
        data=b'{"event": "x"}',
        headers={"Content-Type": "application/json", "X-Truto-Signature": "bad"},
    )
    assert response.status >= 400
    samples = await scrape(harness)
    rejections = {
        (dict(labels)["provider"], dict(labels)["reason"]): n
        for (name, labels), n in samples.items()
        if name == "orchestrator_webhook_rejections_total"
    }
    assert rejections == {("dropbox_sign", "malformed"): 2, ("truto", "signature"): 1}, rejections
