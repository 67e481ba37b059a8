"""Issue 18: `metrics.transitions` is counted in one place (Metrics.transitioned), so the
dispatcher and the operators' actions cannot count a transition two different ways."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from orchestrator import metrics as metrics_module
from orchestrator.domain.lifecycle import Cause
from orchestrator.domain.model import Cancellation, ProviderName, Status

PACKAGE = Path(metrics_module.__file__).resolve().parent


def test_the_transitions_counter_is_incremented_in_one_place() -> None:
    uses = {
        str(path.relative_to(PACKAGE)): len(
            re.findall(r"\btransitions\.labels\(", path.read_text())
        )
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {path: n for path, n in uses.items() if n} == {"metrics.py": 1}


def test_a_transition_is_counted_by_status_and_cause() -> None:
    metrics = metrics_module.Metrics()
    now = datetime(2026, 12, 4, tzinfo=UTC)
    fields = {f: None for f in Cancellation.__dataclass_fields__}
    row = Cancellation(
        **{
            **fields,
            "provider": ProviderName.DROPBOX_SIGN,
            "status": Status.CONFIRMED,
            "created_at": now,
            "updated_at": now,
        }
    )
    metrics.transitioned(row, Cause.WEBHOOK)
    metrics.transitioned(row, Cause.WEBHOOK)
    counted = metrics.registry.get_sample_value(
        "orchestrator_transitions_total", {"status": "confirmed", "cause": "webhook"}
    )
    assert counted == 2
