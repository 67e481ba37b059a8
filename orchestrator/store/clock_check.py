"""Compare the instance's clock with PostgreSQL's at start.

Leases, backoffs and deadlines are computed with the instance's clock and compared across
instances through the database, so instances whose clocks disagree steal each other's leases
early or keep rows late. NTP is assumed; this check says so loudly when it does not hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from orchestrator.clock import Clock
from orchestrator.store.queries import QUERIES as Q

log = logging.getLogger(__name__)

#: Larger differences are logged as a WARNING.
TOLERANCE_S = 1.0


@dataclass(frozen=True)
class ClockReading:
    local: datetime  # the instance's time halfway through the round trip
    database: datetime
    round_trip_s: float

    @property
    def skew_s(self) -> float:
        """How far the instance's clock is ahead of the database's (negative: behind)."""
        return (self.local - self.database).total_seconds()

    def beyond(self, tolerance_s: float) -> bool:
        """True when the clocks differ by more than the tolerance even allowing for the
        database having answered anywhere within the round trip."""
        return abs(self.skew_s) - self.round_trip_s / 2 > tolerance_s


async def read_clocks(conn: asyncpg.Connection, clock: Clock) -> ClockReading:
    before = clock.now()
    database: datetime = await conn.fetchval(Q["database_clock"])
    after = clock.now()
    return ClockReading(
        local=before + (after - before) / 2,
        database=database,
        round_trip_s=(after - before).total_seconds(),
    )


async def check_clock(
    conn: asyncpg.Connection, clock: Clock, tolerance_s: float = TOLERANCE_S
) -> ClockReading:
    """Read both clocks and log a WARNING naming both times when they disagree."""
    reading = await read_clocks(conn, clock)
    if reading.beyond(tolerance_s):
        log.warning(
            "this instance's clock (%s) differs from PostgreSQL's (%s) by %+.3f s (round trip"
            " %.3f s); leases and deadlines use the instance's clock: keep it synchronised"
            " with NTP",
            reading.local.isoformat(),
            reading.database.isoformat(),
            reading.skew_s,
            reading.round_trip_s,
        )
    else:
        log.debug("clock within %.1f s of PostgreSQL's (%+.3f s)", tolerance_s, reading.skew_s)
    return reading
