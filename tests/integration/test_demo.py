"""`orchestrator demo` (what `make demo` runs), small, as a real process: it must check itself."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.processes import free_port


def test_demo_runs_end_to_end_and_checks_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo", "--count", "45", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "every cancellation reached a terminal state that matches the providers" in result.stdout
    assert "reconciliation" in result.stdout or "webhook" in result.stdout
