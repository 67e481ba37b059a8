"""The ``/_sim`` control plane and the command line: seeding, events, callbacks sent as a
test asks (replays, old or future dates), settings.
"""

from __future__ import annotations

from orchestrator.simulator import Simulator, SimulatorServer, event_hash
from orchestrator.simulator.__main__ import _changes, _parse
from tests.simulator.support import DS_KEY, Call, Receiver, cancel_call


async def test_control_plane(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    base = f"{server.url}/_sim"
    status, record, _ = await call(
        "POST", f"{base}/requests", json={"provider": "aptly", "id": "a1", "state": "completed"}
    )
    assert status == 200 and record["state"] == "completed"
    status, record, _ = await call("GET", f"{base}/requests/aptly/a1")
    assert status == 200 and record["state"] == "completed"
    assert (await call("GET", f"{base}/requests/aptly/never"))[0] == 404
    assert (await call("GET", f"{base}/requests/nope/a1"))[0] == 404
    bad_seed = {"provider": "aptly", "id": "a1", "state": "weird"}
    assert (await call("POST", f"{base}/requests", json=bad_seed))[0] == 400
    assert (await call("PATCH", f"{base}/faults", json={"no_such": 1}))[0] == 400
    assert (await call("PATCH", f"{base}/faults", json={"error_5xx_rate": 2}))[0] == 400

    status, event, _ = await call(
        "POST",
        f"{base}/events",
        json={"provider": "dropbox_sign", "id": "d1", "event_type": "signature_request_declined"},
    )
    assert status == 200 and event["signature_request"]["is_declined"] is True
    assert (await call("POST", f"{base}/idle?timeout=2"))[:2] == (200, {"idle": True})
    assert receiver.received[0].payload["event"]["event_type"] == "signature_request_declined"

    status, stats, _ = await call("GET", f"{base}/stats")
    assert stats["aptly"]["states"]["completed"] == 1
    assert stats["dropbox_sign"]["callbacks_delivered"] == 1
    status, calls, _ = await call("GET", f"{base}/calls/dropbox_sign")
    assert status == 200 and calls == {"calls": [], "limit_windows": []}

    assert (await call("POST", f"{base}/reset"))[0] == 200
    assert sim.get_request("aptly", "a1") is None
    assert sim.stats()["dropbox_sign"]["callbacks_delivered"] == 0


async def test_callbacks_are_sent_as_asked_without_changing_the_request(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    await call(**cancel_call(server, "dropbox_sign", "genuine"))
    [genuine] = await receiver.wait_for(1)
    event = genuine.payload["event"]

    replay = {
        "provider": "dropbox_sign",
        "id": "victim",
        "event_type": event["event_type"],
        "event_time": event["event_time"],
    }
    status, sent, _ = await call("POST", f"{server.url}/_sim/callbacks", json=replay)
    assert status == 200
    assert sent["event"]["event_hash"] == event["event_hash"]  # the hash ignores the id
    old = {**replay, "id": "other", "event_time": 1_000_000_000}
    status, sent_old, _ = await call("POST", f"{server.url}/_sim/callbacks", json=old)
    assert status == 200 and sent_old["event"]["event_time"] == "1000000000"

    _, replayed, aged = await receiver.wait_for(3)
    assert replayed.payload["signature_request"]["signature_request_id"] == "victim"
    assert replayed.payload["event"]["event_hash"] == event["event_hash"]
    assert aged.payload["event"]["event_time"] == "1000000000"
    assert aged.payload["event"]["event_hash"] == event_hash(
        DS_KEY, "1000000000", "signature_request_canceled"
    )
    assert sim.dropbox_sign.state_of("victim") == sim.dropbox_sign.state_of("other") == "open"


async def test_truto_webhook_dated_as_asked(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    base = f"{server.url}/_sim/callbacks"
    future = {"provider": "truto", "id": "wf", "event_type": "record:updated"}
    status, sent, _ = await call(
        "POST", base, json={**future, "event_time": "2999-01-01T00:00:00Z"}
    )
    assert status == 200 and sent["created_at"] == "2999-01-01T00:00:00Z"
    status, sent, _ = await call("POST", base, json={**future, "event_time": 0})
    assert status == 200 and sent["created_at"] == "1970-01-01T00:00:00.000Z"
    first, second = await receiver.wait_for(2)
    assert first.payload["created_at"] == "2999-01-01T00:00:00Z"
    assert first.payload["payload"]["id"] == "wf"
    assert sim.truto.state_of("wf") == "open"
    for bad in (
        {**future, "event_time": True},
        {**future, "event_time": 1e300},
        {**future, "provider": "aptly"},
        {"provider": "dropbox_sign", "event_time": "1"},
    ):
        assert (await call("POST", base, json=bad))[0] == 400, bad
    assert second.payload["created_at"] == "1970-01-01T00:00:00.000Z"


def test_command_line_settings() -> None:
    args = _parse(["--port", "0", "--seed", "2", "--set", "error_5xx_rate=0.25", "--set", "x=y"])
    assert _changes(args) == {"seed": 2, "error_5xx_rate": 0.25, "x": "y"}
    sets = ["raw_retry_after=1e300", "raw_ratelimit_reset=-5", "redirect_status=307"]
    args = _parse([arg for item in [*sets, "callback_url=null"] for arg in ("--set", item)])
    changes = _changes(args)
    assert changes == {
        "raw_retry_after": "1e300",
        "raw_ratelimit_reset": "-5",
        "redirect_status": 307,
        "callback_url": None,
    }
    Simulator().configure(changes)
