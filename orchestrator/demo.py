"""`orchestrator demo`: the whole job on this machine, with nothing to set up.

An embedded PostgreSQL, the service, and the three provider simulators with faults on; a
batch of cancels goes in through the public API, a progress bar per status shows them move,
and a summary checks every final state against what the simulators saw. The confirmation
timeout is a few seconds, so the sweeper's reconciliation of dropped callbacks is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.config import load_settings
from orchestrator.domain.model import Cancellation
from orchestrator.service import ListQuery, Service
from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.hub import Simulator
from orchestrator.store import migrations
from orchestrator.store.embedded import EmbeddedPostgres
from orchestrator.web import keys
from orchestrator.web.app import create_app

PROVIDERS = ("dropbox_sign", "truto", "aptly")
STATUSES = ("queued", "sending", "awaiting_confirmation", "confirmed", "failed")
# What the simulator's final state of a request must be for each final outcome.
EXPECTED_STATE = {
    ("confirmed", "canceled"): "canceled",
    ("confirmed", "declined"): "declined",
    ("failed", "completed"): "completed",
    ("failed", "not_cancelable"): "completed",
}


@dataclass(frozen=True)
class DemoOptions:
    count: int = 300
    drop_callback_rate: float = 0.1
    error_5xx_rate: float = 0.05
    rate_429: float = 0.03
    completed_share: float = 0.03
    declined_share: float = 0.02
    port: int = 8080
    keep_running: bool = False
    timeout_s: float = 50.0
    seed: int = 7


def _params(provider: str, n: int) -> dict[str, Any]:
    if provider == "truto":
        return {
            "integrated_account_id": "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
            "message": f"demo cancel {n}",
        }
    if provider == "aptly":
        return {"status": "Cancelled"}
    return {}


def plan(options: DemoOptions) -> list[tuple[str, str]]:
    """(provider, resource id) for each cancel, spread evenly across the providers."""
    return [(PROVIDERS[n % 3], f"demo-{PROVIDERS[n % 3]}-{n:05d}") for n in range(options.count)]


def seed_states(sim: Simulator, batch: list[tuple[str, str]], options: DemoOptions) -> None:
    """Some requests were completed (or declined) before anyone tried to cancel them."""
    every_completed = max(1, round(1 / options.completed_share)) if options.completed_share else 0
    every_declined = max(1, round(1 / options.declined_share)) if options.declined_share else 0
    for n, (provider, resource) in enumerate(batch):
        nth = n // len(PROVIDERS)  # the request's place among its provider's requests
        if every_completed and nth % every_completed == 1:
            sim.seed_request(provider, resource, "completed")
        elif every_declined and provider == "dropbox_sign" and nth % every_declined == 2:
            sim.seed_request(provider, resource, "declined")


async def enqueue_all(http: aiohttp.ClientSession, url: str, batch: list[tuple[str, str]]) -> None:
    limit = asyncio.Semaphore(32)

    async def one(n: int, provider: str, resource: str) -> None:
        body = {"provider": provider, "resource_id": resource, "params": _params(provider, n)}
        async with limit, http.post(f"{url}/v1/cancellations", json=body) as response:
            if response.status not in (200, 202):
                raise RuntimeError(f"enqueue {resource}: {response.status} {await response.text()}")

    await asyncio.gather(*(one(n, p, r) for n, (p, r) in enumerate(batch)))


async def watch(
    http: aiohttp.ClientSession, url: str, total: int, console: Console, timeout_s: float
) -> dict[str, Any]:
    """A bar per status, fed by GET /v1/stats every 100 ms, until everything is terminal."""
    columns = (
        TextColumn("{task.description:>22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + timeout_s
    with Progress(*columns, console=console, transient=False) as progress:
        bars = {s: progress.add_task(s, total=total) for s in STATUSES}
        while True:
            async with http.get(f"{url}/v1/stats") as response:
                stats: dict[str, Any] = await response.json()
            for status, bar in bars.items():
                progress.update(bar, completed=stats[status])
            if stats["confirmed"] + stats["failed"] >= total or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


async def every_cancellation(service: Service) -> list[Cancellation]:
    rows: list[Cancellation] = []
    after = None
    while True:
        page = await service.list_cancellations(ListQuery(limit=200, after=after))
        rows += page.items
        if page.next is None:
            return rows
        after = page.next


async def summarise(
    rows: list[Cancellation], sim: Simulator, console: Console, wall_s: float
) -> list[str]:
    """Print the summary tables; return every disagreement with the simulators."""
    by_status = Counter(r.status.value for r in rows)
    by_outcome = Counter(
        (r.status.value, r.outcome and r.outcome.value, r.confirmed_via and r.confirmed_via.value)
        for r in rows
    )
    attempts = Counter(r.attempts for r in rows)
    times = sorted((r.confirmed_at - r.created_at).total_seconds() for r in rows if r.confirmed_at)

    table = Table(title="cancellations by final state")
    for column in ("status", "outcome", "confirmed_via", "count"):
        table.add_column(column)
    for (status, outcome, via), n in sorted(by_outcome.items(), key=lambda kv: -kv[1]):
        table.add_row(status, outcome or "-", via or "-", str(n))
    console.print(table)

    figures = Table(title="figures")
    figures.add_column("what")
    figures.add_column("value")
    figures.add_row("total", str(len(rows)))
    for status in STATUSES:
        figures.add_row(f"  {status}", str(by_status.get(status, 0)))
    figures.add_row("attempts", ", ".join(f"{k}: {v}" for k, v in sorted(attempts.items())))
    figures.add_row("time to confirmation p50", f"{_percentile(times, 0.5):.2f} s")
    figures.add_row("time to confirmation p95", f"{_percentile(times, 0.95):.2f} s")
    stats = sim.stats()
    for provider in PROVIDERS:
        p = stats[provider]
        figures.add_row(
            f"{provider} at the provider",
            f"{p['cancel_calls']} cancel calls, {p['status_calls']} status checks, "
            f"{p['responses']} answers, {p.get('callbacks_dropped', 0)} callbacks dropped",
        )
    figures.add_row("wall time", f"{wall_s:.1f} s")
    console.print(figures)

    problems = []
    for r in rows:
        if not r.status.is_terminal:
            problems.append(f"{r.resource_id}: still {r.status}")
            continue
        expected = EXPECTED_STATE.get((r.status.value, r.outcome.value if r.outcome else ""))
        actual = (sim.get_request(r.provider, r.resource_id) or {}).get("state")
        if expected != actual:
            problems.append(
                f"{r.resource_id}: {r.status}/{r.outcome} but the provider says {actual}"
            )
    return problems


async def run(options: DemoOptions, console: Console) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    server = EmbeddedPostgres(data_dir)
    try:
        dsn = await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(dsn)
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()
        return await _run(options, console, dsn)
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(data_dir, ignore_errors=True)


async def _run(options: DemoOptions, console: Console, dsn: str) -> int:
    faults = Faults(
        drop_callback_rate=options.drop_callback_rate,
        error_5xx_rate=options.error_5xx_rate,
        rate_429=options.rate_429,
        retry_after_s=1.0,
        seed=options.seed,
    )
    async with SimulatorServer(Simulator(faults=faults)) as sim_server:
        sim = sim_server.simulator
        url = f"http://127.0.0.1:{options.port}"
        sim.dropbox_sign.callback_url = f"{url}/webhooks/dropbox_sign"
        settings = load_settings(
            database_url=dsn,
            port=options.port,
            confirm_timeout_s=3,
            sweep_interval_s=0.5,
            backoff_base_s=0.2,
            backoff_max_s=2,
            dispatch_poll_s=0.2,
            dispatch_concurrency=48,
            dropbox_sign_rate_limit_per_min=60_000,
            **sim_server.settings(),
        )
        app = create_app(settings, dsn)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", options.port).start()
        try:
            batch = plan(options)
            seed_states(sim, batch, options)
            console.print(
                f"[bold]orchestrator demo[/]: {options.count} cancels across "
                f"{', '.join(PROVIDERS)}; faults: {options.drop_callback_rate:.0%} callbacks "
                f"dropped, {options.error_5xx_rate:.0%} 5xx, {options.rate_429:.0%} 429; "
                "confirmation timeout 3 s"
            )
            started = time.monotonic()
            async with aiohttp.ClientSession() as http:
                await enqueue_all(http, url, batch)
                await watch(http, url, options.count, console, options.timeout_s)
            wall = time.monotonic() - started
            problems = await summarise(
                await every_cancellation(app[keys.SERVICE]), sim, console, wall
            )
            console.print(
                f"look at: {url}/v1/stats  {url}/v1/cancellations?limit=5  "
                f"{sim_server.url}/_sim/stats"
            )
            if problems:
                console.print(f"[bold red]{len(problems)} cancellations disagree:[/]")
                for line in problems[:20]:
                    console.print(f"  {line}")
                return 1
            console.print(
                f"[bold green]every cancellation reached a terminal state that matches the "
                f"providers[/] ({wall:.1f} s)"
            )
            if options.keep_running:
                console.print(f"the service stays up on {url}; Ctrl-C to stop")
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
            return 0
        finally:
            await runner.cleanup()


def main(options: DemoOptions) -> int:
    console = Console()
    # The progress bars and the summary tell the story; the service's own log would drown them.
    logging.getLogger("orchestrator").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(options, console))
    except KeyboardInterrupt:
        return 130
