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
        "--concurrency=8",
        "--sweep-rows=2000,4000",
        "--overdue=20",
        "--sweep-rounds=1",
        "--pgbench-seconds=1",
        "--repeat=1",
        "--settle=0.2",
        "--phase-timeout=20",
        "--budget=25",
        f"--out={out}",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        raw, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # run.py stops everything it started on SIGTERM
        raw, _ = proc.communicate(timeout=30)
        pytest.fail(f"the benchmark did not finish in 90 s:\n{raw.decode()[-4000:]}")
    output = raw.decode(errors="replace")
    assert proc.returncode == 0, output[-4000:]

    data = json.loads(out.read_text())
    results = data["results"]
    assert results["skipped"] == []
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
    assert "LockRows" in results["sweep"][0]["plan"]
    assert results["pgbench"]["tps"] > 0
    assert len(data["targets"]) == 8

    # Its PostgreSQL, services, simulator and baseline are all gone, and the data with them.
    names = {p["name"].split("-")[0] for p in data["processes"]}
    assert {"postmaster", "simulator", "service", "baseline"} <= names
    alive = [p for p in data["processes"] if psutil.pid_exists(p["pid"])]
    assert alive == []
    match = re.search(r"PostgreSQL in (\S+orchestrator-bench-pg-\w+)", output)
    assert match, output[:2000]
    assert not Path(match[1]).exists()
    assert _leftovers(match[1]) == []
