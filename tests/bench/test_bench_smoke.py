"""`make bench` at a tiny size, so the benchmark cannot rot: every phase runs against both
implementations, the JSON carries the figures, and nothing is left running afterwards."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _leftovers(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


def test_bench_runs_every_phase_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--enqueue=60",
        "--batch=60",
        "--batch-size=20",
        "--webhooks=40",
        "--e2e=40",
        "--e2e-large=60",
        "--concurrency=8",
        "--sweep-rows=2000,4000",
        "--overdue=20",
        "--sweep-rounds=1",
        "--retention-rounds=1",
        "--claims=5",
        "--claim-rows=2000",
        "--scale-rows=3000,6000",
        "--scale-backlog=400",
        "--scale-expired=600",
        "--scale-rounds=2",
        "--scale-sweeps=2",
        "--scale-claims=3",
        "--pgbench-seconds=1",
        "--repeat=1",
        "--settle=0.2",
        "--phase-timeout=20",
        "--budget=60",
        f"--out={out}",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        raw, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # run.py stops everything it started on SIGTERM
        raw, _ = proc.communicate(timeout=30)
        pytest.fail(f"the benchmark did not finish in 120 s:\n{raw.decode()[-4000:]}")
    output = raw.decode(errors="replace")
    assert proc.returncode == 0, output[-4000:]

    data = json.loads(out.read_text())
    results = data["results"]
    assert results["skipped"] == []
    for impl in ("service", "baseline", "naive"):
        for key, n in (("e2e", 40), ("e2e_large", 60)):
            e2e = results[impl][key]
            assert e2e["complete"] and e2e["confirmed"] == n, (impl, key)
            assert e2e["tup_inserted_per_cancel"] >= 1, (impl, key)
            # Postgres's CPU is read in clock ticks (10 ms): 40 cancels of the naive service
            # can cost less than one, so it may be 0 here, never negative.
            assert e2e["pg_cpu_s_per_1000"] >= 0, (impl, key)
            assert e2e["total_cpu_s_per_1000"] == pytest.approx(
                e2e["cpu_s_per_1000"] + e2e["pg_cpu_s_per_1000"], abs=0.002
            ), (impl, key)  # each figure is rounded to 3 places on its own
            assert e2e["cpu_s_per_1000"] > 0, (impl, key)
    for impl in ("service", "baseline"):
        assert results[impl]["api"]["enqueue"]["ok"] == 60, impl
        assert results[impl]["api"]["webhook"]["ok"] == 40, impl
        assert results[impl]["api"]["webhook"]["confirmed_rows"] == 40, impl
        e2e = results[impl]["e2e"]
        assert e2e["complete"] and e2e["confirmed"] == 40, impl
        assert e2e["xacts_per_cancel"] > 0 and e2e["cpu_s_per_1000"] > 0, impl
    batch = results["service"]["api"]["batch"]
    assert batch["ok"] == 3 and batch["items"] == 60 and batch["items_per_s"] > 0
    assert "batch" not in results["baseline"]["api"]
    assert [s["rows"] for s in results["sweep"]] == [2000, 4000]
    assert all(s["requeued"] == [20] for s in results["sweep"])
    assert all(s["idle_steps_ms"]["unserved_accounts"] > 0 for s in results["sweep"])
    assert "LockRows" in results["sweep"][0]["plan"]
    # Retention: a quarter of each table ended before the cut-off; a batch, then a round,
    # then nothing left; each deleted row took its four history rows with it.
    for s in results["sweep"]:
        kept = s["retention"]
        assert s["expired"] == s["rows"] // 4
        done = kept["batches"] + kept["rounds"]
        assert kept["batches"][0]["deleted"] == 500
        assert sum(r["deleted"] for r in done) == s["expired"]
        assert sum(r["history_deleted"] for r in done) == 4 * s["expired"]
        assert sum(r["inbox_deleted"] for r in done) > 0
        # An idle round deletes nothing. Its WAL is at most a page-pruning record that a scan
        # may leave behind (on-access pruning of versions dead since the last vacuum, ~200 B),
        # never a row written: one deleted row with its history is well over 512 B.
        for idle in kept["idle_rounds"]:
            assert idle["deleted"] == idle["history_deleted"] == idle["inbox_deleted"] == 0
            assert idle["wal_bytes"] <= 512, idle
        assert "cancellation_state_terminal_at" in kept["plan"]
        # The history goes in the same statement (0010), with no cascade.
        assert "Delete on cancellation_events" in kept["plan"]
        assert "fkey" not in kept["plan"]
    # The claim, each way: one transaction and one round trip per claim of 32.
    claim = results["claim"]
    for way in ("unlimited", "limited", "before", "before-no-notify"):
        assert claim[way]["rows"] == 5 * 32, way
        assert claim[way]["xacts_per_claim"] == 1, way
        assert claim[way]["round_trips_per_claim"] == 1, way
        assert claim[way]["ms_per_claim"] > 0 and claim[way]["wal_bytes_per_claim"] > 0, way
    assert results["pgbench"]["tps"] > 0
    assert results["pgbench"]["update"]["tps"] > 0
    assert results["pgbench"]["update_notify"]["tps"] > 0
    assert len(data["targets"]) == 8
    # Issue 18's targets, each measured, and the rounds at scale at both sizes, the
    # database of each dropped afterwards.
    assert [t["met"] is not None for t in data["targets_18"]] == [True] * 13
    assert [s["rows"] for s in results["scale"]] == [3000, 6000]
    for s in results["scale"]:
        assert s["claim"]["claimed"] == 3 * 32
        assert s["sweep"]["requeued"] == [20, 20]
        assert s["retention"]["deleted"] == 2 * 500 or s["expired"] < 1000
        assert s["stats"]["rounds"] == 2 and s["stats"]["p95_ms"] > 0
        assert "claim_rows" in s["claim"]["plan"] or "LockRows" in s["claim"]["plan"]
        assert "Buffers" in s["stats"]["plan"] and "Buffers" in s["counts_by_provider"]["plan"]

    # Its PostgreSQL, services, simulator and baseline are all gone, and the data with them.
    names = {p["name"].split("-")[0] for p in data["processes"]}
    assert {"postmaster", "simulator", "service", "baseline", "naive"} <= names
    alive = [p for p in data["processes"] if psutil.pid_exists(p["pid"])]
    assert alive == []
    match = re.search(r"PostgreSQL in (\S+orchestrator-bench-pg-\w+)", output)
    assert match, output[:2000]
    assert not Path(match[1]).exists()
    assert _leftovers(match[1]) == []
