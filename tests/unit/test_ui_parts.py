"""The dashboard's pure parts: how durations read (sessions: tests/integration/test_sessions.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.web import ui

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "reads"),
    [
        (-3, "0 s"),
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min 00 s"),
        (754, "12 min 34 s"),
        (3600, "1 h 00 min"),
        (3600 + 125, "1 h 02 min"),
        (86400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
    ],
)
def test_durations_read_short(seconds: float, reads: str) -> None:
    assert ui.duration(seconds) == reads


def test_ago_reads_past_and_future_and_iso_text() -> None:
    assert ui.ago(NOW - timedelta(seconds=90), NOW) == "1 min 30 s ago"
    assert ui.ago(NOW + timedelta(seconds=5), NOW) == "in 5 s"
    assert ui.ago((NOW - timedelta(hours=2)).isoformat(), NOW) == "2 h 00 min ago"
    assert ui.ago(None, NOW) == "—"
    assert ui.when("not a time") == "—"
