"""`make bench`: how fast and how frugal the orchestrator is, next to a lean baseline.

Everything runs on this machine, on 127.0.0.1 and a dedicated embedded PostgreSQL in a
temporary directory: the service (`python -m orchestrator serve`), the baseline
(bench/baseline.py) and the Dropbox Sign simulator each in their own process, the load from
this one. Prints a table and writes JSON to bench/results/<date>.json.

    .venv/bin/python bench/run.py                # the full run (a few minutes)
    .venv/bin/python bench/run.py --quick        # a tenth of the sizes
    .venv/bin/python bench/run.py --enqueue 500 --e2e 200 --webhooks 200 --sweep-rows 10000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console

import harness
import phases
import profile_summary
import report

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--enqueue", type=int, default=20_000, help="POSTs in the enqueue phase")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="items enqueued through POST /v1/cancellations/batch (default: as --enqueue)",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="items per batch request")
    parser.add_argument("--e2e", type=int, default=5_000, help="cancels end to end")
    parser.add_argument(
        "--e2e-large",
        type=int,
        default=30_000,
        help="cancels end to end in the second, larger round (issue 18; 0 skips it)",
    )
    parser.add_argument(
        "--repeat-large", type=int, default=1, help="runs per implementation of --e2e-large"
    )
    parser.add_argument(
        "--no-naive",
        action="store_true",
        help="end to end without issue 18's naive service (bench/baseline.py --naive)",
    )
    parser.add_argument("--webhooks", type=int, default=10_000, help="callbacks to ingest")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument(
        "--sweep-rows",
        default="100000,1000000",
        help="table sizes for the sweeper, comma-separated ('' skips the phase)",
    )
    parser.add_argument("--overdue", type=int, default=1_000, help="overdue rows per table")
    parser.add_argument(
        "--sweep-rounds", type=int, default=7, help="rounds per table size; the median is reported"
    )
    parser.add_argument(
        "--expired",
        type=int,
        default=20_000,
        help="terminal rows per sweep table that ended before the retention (0: no retention)",
    )
    parser.add_argument(
        "--retention-rounds",
        type=int,
        default=3,
        help="retention: single batches and full rounds timed per table; medians reported",
    )
    parser.add_argument("--claims", type=int, default=500, help="claims timed per way and run")
    parser.add_argument("--claim-batch", type=int, default=32, help="rows per claim")
    parser.add_argument(
        "--claim-rows", type=int, default=100_000, help="queued rows in the claim's table"
    )
    parser.add_argument(
        "--scale-rows",
        default="1000000,10000000",
        help="rounds at scale (issue 18): table sizes, comma-separated ('' skips the phase)",
    )
    parser.add_argument(
        "--scale-backlog", type=int, default=20_000, help="open rows in each scale table"
    )
    parser.add_argument(
        "--scale-expired", type=int, default=20_000, help="rows past retention per scale table"
    )
    parser.add_argument("--scale-rounds", type=int, default=20, help="stats calls per size")
    parser.add_argument(
        "--scale-sweeps", type=int, default=5, help="sweep and retention rounds per size"
    )
    parser.add_argument("--scale-claims", type=int, default=100, help="claims of 32 per size")
    parser.add_argument("--pgbench-seconds", type=int, default=10, help="0 skips pgbench")
    parser.add_argument("--pgbench-clients", type=int, default=8)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="end-to-end runs per implementation, interleaved; each figure is the median",
    )
    parser.add_argument("--callback-delay", type=float, default=0.05, help="simulator, seconds")
    parser.add_argument("--phase-timeout", type=float, default=240, help="seconds per phase")
    parser.add_argument(
        "--settle",
        type=float,
        default=1.5,
        help="seconds between a process being ready and the 'before' readings",
    )
    parser.add_argument("--budget", type=float, default=2700, help="seconds for the whole run")
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument(
        "--only",
        default="api,e2e,sweep,claim,pgbench,scale",
        help="phases to run, comma-separated: api (enqueue + webhook), e2e, sweep, claim,"
        " pgbench, scale",
    )
    parser.add_argument("--no-baseline", action="store_true", help="the service alone")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy both implementations end to end"
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="load pg_stat_statements and print where Postgres's time goes end to end"
        " (the extension's own cost is in the figures: compare runs made alike)",
    )
    parser.add_argument(
        "--variant",
        default="",
        help="prototype optimisations for the service, from bench/variants.py (comma-separated)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    parser.add_argument("--keep-logs", action="store_true", help="print where the logs are")
    args = parser.parse_args(argv)
    if args.quick:
        args.enqueue, args.e2e = args.enqueue // 10, args.e2e // 10
        args.e2e_large = args.e2e_large // 10
        args.webhooks = args.webhooks // 10
        args.overdue = max(1, args.overdue // 10)
        args.expired = args.expired // 10
        args.claims, args.claim_rows = args.claims // 10, args.claim_rows // 10
        args.sweep_rows = ",".join(
            str(int(n) // 10) for n in args.sweep_rows.split(",") if n.strip()
        )
        args.pgbench_seconds = min(args.pgbench_seconds, 3)
        args.scale_rows = ",".join(
            str(int(n) // 10) for n in args.scale_rows.split(",") if n.strip()
        )
        args.scale_backlog, args.scale_expired = args.scale_backlog // 10, args.scale_expired // 10
    args.webhooks = min(args.webhooks, args.enqueue)
    if args.batch is None:
        args.batch = args.enqueue
    elif args.quick:
        args.batch = args.batch // 10
    return args


async def bench(args: argparse.Namespace, run: phases.Run, console: Console) -> dict[str, Any]:
    started = time.monotonic()
    only = {p.strip() for p in args.only.split(",")}
    results: dict[str, Any] = {"service": {}, "baseline": {}, "naive": {}, "load_averages": []}
    skipped: list[str] = []

    def time_left(phase: str) -> bool:
        if time.monotonic() - started < args.budget:
            return True
        skipped.append(phase)
        console.print(f"[yellow]budget of {args.budget:.0f} s spent: {phase} skipped[/]")
        return False

    def step(text: str) -> None:
        load = [round(x, 2) for x in os.getloadavg()]
        results["load_averages"].append([round(time.monotonic() - started, 1), text, load])
        console.print(f"[dim]{time.monotonic() - started:6.1f} s  load {load[0]:.1f}[/]  {text}")

    await run.blackhole.start()
    if only & {"e2e"}:
        await run.start_simulator(args.callback_delay)
    impls = [i for i in run.impls() if not (args.no_baseline and i.name == "baseline")]
    e2e_impls = [
        i for i in run.impls(naive=not args.no_naive) if i.is_service or not args.no_baseline
    ]

    if "api" in only:
        for impl in impls:
            if time_left(f"api/{impl.name}"):
                batched = f", {args.batch:,} in batches" if impl.is_service and args.batch else ""
                step(
                    f"{impl.name}: {args.enqueue:,} enqueues{batched},"
                    f" then {args.webhooks:,} callbacks"
                )
                results[impl.name]["api"] = await phases.api_phase(
                    run,
                    impl,
                    args.enqueue,
                    args.webhooks,
                    args.concurrency,
                    args.phase_timeout,
                    batch_items=args.batch,
                    batch_size=args.batch_size,
                )
    if "e2e" in only:
        rounds = [("e2e", args.e2e, args.repeat), ("e2e_large", args.e2e_large, args.repeat_large)]
        for key, n, repeat in rounds:
            if n <= 0:
                continue
            runs: dict[str, list[dict[str, Any]]] = {i.name: [] for i in e2e_impls}
            for rep in range(max(1, repeat)):
                for impl in e2e_impls:  # interleaved, so a slow spell of the machine hits all
                    if not time_left(f"{key}/{impl.name}/{rep + 1}"):
                        continue
                    step(f"{impl.name}: {n:,} cancels end to end ({rep + 1}/{repeat})")
                    profile = (
                        run.log_dir / f"{impl.name}-e2e.pyspy.txt"
                        if args.profile and rep == 0 and key == "e2e" and impl.name != "naive"
                        else None
                    )
                    runs[impl.name].append(
                        await phases.e2e_phase(
                            # At least 100 cancels a second, however many there are.
                            run,
                            impl,
                            n,
                            args.concurrency,
                            max(args.phase_timeout, n / 100),
                            profile,
                        )
                    )
                    runs[impl.name][-1]["load_average"] = [round(x, 2) for x in os.getloadavg()]
                    if profile is not None and profile.exists():
                        results[impl.name]["profile"] = profile_summary.summarise(profile)
            for name, done in runs.items():
                if done:
                    results.setdefault(name, {})[key] = {**median_of(done), "runs": done}
    if "pgbench" in only and args.pgbench_seconds > 0 and time_left("pgbench"):
        step(f"pgbench: {args.pgbench_seconds} s of one-row INSERTs")
        results["pgbench"] = await phases.pgbench_phase(
            run, args.pgbench_seconds, args.pgbench_clients
        )
    sizes = sorted(int(n) for n in args.sweep_rows.split(",") if n.strip())
    if "sweep" in only and sizes:
        results["sweep"] = []
        for rows in sizes:
            if time_left(f"sweep/{rows}"):
                step(f"sweeper: {rows:,} rows, {args.overdue:,} overdue (COPY, then rounds)")
                results["sweep"].append(
                    await phases.sweep_phase(
                        run,
                        rows,
                        args.overdue,
                        args.sweep_rounds,
                        args.expired,
                        args.retention_rounds,
                    )
                )
    if "claim" in only and args.claims > 0 and time_left("claim"):
        step(
            f"claim: {args.claims:,} claims of {args.claim_batch} rows per way"
            f" x {args.repeat} (table of {args.claim_rows:,} queued rows)"
        )
        results["claim"] = await phases.claim_phase(
            run, args.claim_rows, args.claims, args.claim_batch, args.repeat
        )
    scale_sizes = sorted(int(n) for n in args.scale_rows.split(",") if n.strip())
    if "scale" in only and scale_sizes:
        results["scale"] = []
        for rows in scale_sizes:
            if time_left(f"scale/{rows}"):
                step(f"scale: {rows:,} rows (built in SQL), then claim, sweep, retention, stats")
                results["scale"].append(
                    await phases.scale_phase(
                        run,
                        rows,
                        args.scale_backlog,
                        args.scale_expired,
                        args.scale_rounds,
                        args.scale_sweeps,
                        args.scale_sweeps,
                        args.scale_claims,
                    )
                )
                step(f"scale: {rows:,} rows done, its database dropped")
    results["skipped"] = skipped
    results["wall_s"] = round(time.monotonic() - started, 1)
    return results


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure the median over the runs; anything else from the first run."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, dict):
            out[key] = median_of([v for v in values if isinstance(v, dict)])
        elif isinstance(first, bool) or not isinstance(first, int | float):
            out[key] = all(values) if isinstance(first, bool) else first
        else:
            numbers = [v for v in values if isinstance(v, int | float)]
            out[key] = statistics.median(numbers) if numbers else None
    return out


async def main_async(args: argparse.Namespace, run: phases.Run, console: Console) -> dict[str, Any]:
    pg_settings = await run.pg.settings()
    commit_at_start = _commit()
    try:
        results = await asyncio.wait_for(bench(args, run, console), args.budget + 120)
    finally:
        await run.blackhole.stop()
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        # Others may edit the tree while a run goes on: say so when the code moved.
        "commit": commit_at_start
        if _commit() == commit_at_start
        else f"{commit_at_start}, then {_commit()} during the run",
        "machine": harness.machine(),
        "postgres": pg_settings,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
    }


def _commit() -> str | None:
    """The code measured: HEAD, marked dirty when orchestrator/ or migrations/ differ."""
    import subprocess

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv], cwd=harness.ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "orchestrator", "migrations")
    return (head + ("-dirty" if dirty else "")) or None


def print_plans(console: Console, results: dict[str, Any]) -> None:
    for s in results.get("scale", []):
        for name in ("claim", "stats", "counts_by_provider", "sweep", "retention"):
            if "plan" in s.get(name, {}):
                console.print(f"\n[bold]scale: {name}, {s['rows']:,} rows[/]")
                console.print(s[name]["plan"], highlight=False, markup=False)
    for s in results.get("sweep", []):
        console.print(f"\n[bold]requeue_overdue, inner select, {s['rows']:,} rows[/]")
        console.print(s["plan"], highlight=False, markup=False)
        console.print(f"\n[bold]requeue_overdue, the whole statement, {s['rows']:,} rows[/]")
        console.print(s["full_plan"], highlight=False, markup=False)
        if "retention" in s:
            console.print(f"\n[bold]delete_expired_cancellations, {s['rows']:,} rows[/]")
            console.print(s["retention"]["plan"], highlight=False, markup=False)
            console.print(f"\n[bold]delete_unused_inbox_events, {s['rows']:,} rows[/]")
            console.print(s["retention"]["inbox_plan"], highlight=False, markup=False)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console(width=max(120, Console().width))
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every process we started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    variants = [v for v in args.variant.split(",") if v]
    log_dir = Path(tempfile.mkdtemp(prefix="orchestrator-bench-logs-"))
    pg = harness.Postgres()
    children: list[harness.Child] = []
    try:
        console.print(f"[bold]orchestrator bench[/]: PostgreSQL in {pg.data_dir}")
        console.print(f"logs in {log_dir}")
        pg.start(statements=args.statements)
        postmaster = pg.postmaster_pid
        run = phases.Run(pg, log_dir, children, variants)
        run.statements = args.statements
        run.settle_s = args.settle
        data = asyncio.run(main_async(args, run, console))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    finally:
        for child in reversed(children):
            child.stop(timeout_s=10)
        pg.stop()
    data["targets"] = report.targets(data["results"])
    data["targets_18"] = report.targets_18(data["results"])
    # Every process this run started (all stopped by now), so a test can check none is left.
    data["processes"] = [{"name": c.name, "pid": c.pid} for c in children if c.proc] + [
        {"name": "postmaster", "pid": postmaster}
    ]
    out = args.out or RESULTS / f"{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print_plans(console, data["results"])
    for name in ("service", "baseline"):
        if "profile" in data["results"][name]:
            profile_summary.print_summary(console, name, data["results"][name]["profile"])
    report.print_report(console, data)
    report.print_statements(console, data["results"])
    console.print(
        f"code {data['commit']}; written to {out}; wall time {data['results']['wall_s']} s"
    )
    if not args.keep_logs:
        import shutil

        shutil.rmtree(log_dir, ignore_errors=True)
    incomplete = [
        f"{name} ({key})"
        for name in ("service", "baseline", "naive")
        for key in ("e2e", "e2e_large")
        if key in data["results"][name] and not data["results"][name][key]["complete"]
    ]
    if incomplete:
        console.print(f"[red]end to end did not confirm every cancel for: {incomplete}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
