"""At start the instance compares its clock with PostgreSQL's and warns beyond one second."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from orchestrator import cli
from orchestrator.clock import ManualClock, SystemClock
from orchestrator.store.clock_check import ClockReading, check_clock

WARNING = re.compile(
    r"this instance's clock \((?P<local>[^)]+)\) differs from PostgreSQL's \((?P<db>[^)]+)\)"
    r" by (?P<skew>[+-][\d.]+) s"
)


def skewed(seconds: float) -> ManualClock:
    return ManualClock(datetime.now(UTC) + timedelta(seconds=seconds))


@pytest.mark.parametrize("skew_s", [5.0, -3.0, 3600.0])
async def test_a_skewed_clock_is_a_warning_naming_both_times(
    db: asyncpg.Connection, caplog: pytest.LogCaptureFixture, skew_s: float
) -> None:
    with caplog.at_level(logging.DEBUG, logger="orchestrator"):
        reading = await check_clock(db, skewed(skew_s))
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING
    found = WARNING.search(record.getMessage())
    assert found is not None, record.getMessage()
    local, database = (datetime.fromisoformat(found[k]) for k in ("local", "db"))
    assert local == reading.local
    assert database == reading.database
    assert float(found["skew"]) == pytest.approx((local - database).total_seconds(), abs=1e-3)
    assert float(found["skew"]) == pytest.approx(skew_s, abs=0.5)
    assert "NTP" in record.getMessage()


@pytest.mark.parametrize("skew_s", [None, 0.4, -0.4])
async def test_clocks_within_a_second_say_nothing(
    db: asyncpg.Connection, caplog: pytest.LogCaptureFixture, skew_s: float | None
) -> None:
    clock = SystemClock() if skew_s is None else skewed(skew_s)
    with caplog.at_level(logging.DEBUG, logger="orchestrator"):
        reading = await check_clock(db, clock)
    assert abs(reading.skew_s) < 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_serve_runs_the_check_at_start(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        await cli.compare_clocks(dsn, skewed(-10))
    assert len(WARNING.findall(caplog.text)) == 1


async def test_an_unreachable_database_does_not_stop_the_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        await cli.compare_clocks("postgresql://nobody@127.0.0.1:1/none")
    assert "could not compare" in caplog.text


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ahead_s", "round_trip_s", "beyond"),
    [
        (0.0, 0.0, False),
        (1.0, 0.0, False),
        (1.01, 0.0, True),
        (-1.01, 0.0, True),
        (1.4, 1.0, False),  # the database may have answered anywhere in the round trip
        (1.6, 1.0, True),
        (-30.0, 0.2, True),
    ],
)
def test_the_round_trip_is_allowed_for(ahead_s: float, round_trip_s: float, beyond: bool) -> None:
    reading = ClockReading(NOW + timedelta(seconds=ahead_s), NOW, round_trip_s)
    assert reading.skew_s == pytest.approx(ahead_s)
    assert reading.beyond(1.0) is beyond
