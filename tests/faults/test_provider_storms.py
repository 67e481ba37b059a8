"""Fault 3, provider storms: 30% 5xx, 429s with rate-limit headers, answers slower than the
client timeout, and connection resets, at all three providers at once.

Everything must still end terminal and agree with the provider, no cancellation may use more
than ORCH_MAX_ATTEMPTS attempts, and no call may reach an account inside a window a 429 told
the orchestrator to wait (read from the simulators' call logs).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.base import ProviderSimulator
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.hub import Simulator
from tests.faults import common
from tests.integration.processes import ServiceProcess

TOTAL = 300
MAX_ATTEMPTS = 6
HTTP_TIMEOUT_S = 0.5
STORM = Faults(
    error_5xx_rate=0.3,
    rate_429=0.05,
    retry_after_s=1.0,
    slow_rate=0.05,
    slow_s=1.0,  # twice the client's timeout: the orchestrator gives up on these
    reset_rate=0.05,
    seed=7,
)
#: A call that reaches the simulator this soon after a 429 was already on its way.
IN_FLIGHT_GRACE_S = 0.2
#: The simulator and the service read the same system clock; this covers rounding only.
CLOCK_SLACK_S = 0.05


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(Simulator(faults=STORM)) as server:
        yield server


def unheard_429s(provider: ProviderSimulator, monkeypatch: pytest.MonkeyPatch) -> set[float]:
    """Start times of the 429 windows whose answer nobody heard.

    The slow fault sleeps before the rate limit is decided, so a 429 can be drawn for a call
    whose client has already timed out: that 429 told the orchestrator nothing.
    """
    unheard: set[float] = set()
    original = provider.rate_limited_response

    def noting(now: float, until: float, limit: int) -> web.Response:
        if time.time() - now >= STORM.slow_s / 2:
            unheard.add(now)
        return original(now, until, limit)

    monkeypatch.setattr(provider, "rate_limited_response", noting)
    return unheard


def calls_inside_429_windows(provider: ProviderSimulator, unheard: set[float]) -> list[str]:
    """Each call that reached an account inside a window a heard 429 set, once."""
    found: dict[tuple[float, str | None], str] = {}
    for window in provider.limit_windows:
        if window.start in unheard:
            continue
        for call in provider.calls:
            if (
                call.account == window.account
                and window.start + IN_FLIGHT_GRACE_S < call.at < window.until - CLOCK_SLACK_S
            ):
                found.setdefault(
                    (call.at, call.request_id),
                    f"{provider.name} {call.kind} {call.request_id} at"
                    f" +{call.at - window.start:.3f}s of a {window.until - window.start:.2f}s"
                    f" window (answered {call.status})",
                )
    return list(found.values())


@pytest.mark.timeout(240)
async def test_storms_at_every_provider(
    sim: SimulatorServer,
    dsn: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unheard = {name: unheard_429s(p, monkeypatch) for name, p in sim.simulator.providers.items()}
    env = common.service_env(
        sim,
        dsn,
        ORCH_HTTP_TIMEOUT_S=str(HTTP_TIMEOUT_S),
        ORCH_HTTP_CONNECT_TIMEOUT_S=str(HTTP_TIMEOUT_S),
        ORCH_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        ORCH_CONFIRM_TIMEOUT_S="10",
    )
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log)
    sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    try:
        service.start()
        await service.wait_ready()
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            caller = common.Caller(http, service.url)
            accepted = await caller.enqueue_all(common.spread("storm", TOTAL))
        drained_s = await common.wait_all_terminal(db, TOTAL, timeout_s=180)
        total_s = time.monotonic() - started
    finally:
        service.stop()

    rows = await db.fetch(
        "SELECT provider, status, attempts, last_error->>'code' AS code FROM cancellations"
    )
    statuses = dict(await db.fetch("SELECT status, count(*) FROM cancellations GROUP BY status"))
    failures = sorted({(r["provider"], r["code"]) for r in rows if r["status"] == "failed"})
    early = [
        line
        for name, p in sim.simulator.providers.items()
        for line in calls_inside_429_windows(p, unheard[name])
    ]
    stats = sim.simulator.stats()
    injected = {
        name: {
            "calls": len(p.calls),
            "5xx": s["injected_5xx"],
            "429": s["rate_limited"],
            "slow": s["injected_slow"],
            "resets": s["injected_resets"],
            "during_429": s["calls_before_reset"],
            "duplicates": s["duplicate_cancel_calls"],
        }
        for (name, p), s in zip(sim.simulator.providers.items(), stats.values(), strict=True)
    }
    print(
        f"\nprovider storms: {TOTAL} cancels over 3 providers; all terminal {total_s:.1f}s after"
        f" the first enqueue ({drained_s:.1f}s after the last); {statuses}; max attempts"
        f" {max(r['attempts'] for r in rows)} of {MAX_ATTEMPTS}; failures {failures};"
        f" injected {injected}; calls inside a heard 429 window: {len(early)}"
    )
    for name in sim.simulator.providers:
        mine = [line for line in early if line.startswith(name + " ")]
        print(f"  {name}: {len(mine)} calls inside a heard 429 window", *mine[:4], sep="\n    ")

    assert await common.lost(db, accepted) == []
    assert await common.confirmed_twice(db) == []
    assert await common.broken_chains(db) == []
    assert all(r["attempts"] <= MAX_ATTEMPTS for r in rows)
    assert all(code == "exhausted" for _, code in failures)
    assert await common.disagreements(db, sim) == []
    assert early == []
