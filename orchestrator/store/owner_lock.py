"""The lock that says this instance is alive, held on a direct connection for the process's
life.

Each instance holds a session advisory lock keyed by its owner id (the `lease_owner` of its
claims). Postgres drops it the moment the session ends: a process killed, a host whose TCP
keepalives stop answering. Every instance's sweeper looks for owners of leased rows whose lock
is free and, after a grace period, requeues their rows (workers/sweeper.py), so a crash costs
seconds instead of the lease.

The lock must be held before the instance claims. If the connection drops while the process
lives (a Postgres restart, a failover, a network cut), `held()` turns false at once and the
dispatcher stops claiming until the lock is re-taken. Rows it had claimed may meanwhile be
requeued by another instance; the fencing version then makes this instance's late answers
match no row (Dispatcher._process logs them as fenced), and the provider may see that cancel
a second time, which every provider answers as already canceled.

A session lock cannot pass through a transaction pooler: `dsn` must reach Postgres itself
(DATABASE_DIRECT_URL, when set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from orchestrator.store.db import CONNECTION_ERRORS
from orchestrator.store.queries import QUERIES as Q
from orchestrator.store.supervised import keep_supervised, pause, watch

log = logging.getLogger(__name__)

#: So that Postgres itself notices a host that vanished without closing its socket (power
#: loss, a network cut) in about 5 + 2 * 3 = 11 s, not the kernel's default two hours.
KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}


class OwnerLock:
    """Holds the owner lock; `run()` keeps it held, re-taking it after a loss."""

    def __init__(
        self,
        dsn: str,
        owner: str,
        *,
        check_s: float = 0.5,
        ping_s: float = 5.0,
        retry_s: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.owner = owner
        #: How often the connection's state is looked at, and how often it must answer (a
        #: half-open connection shows only when a query gets no answer).
        self.check_s = check_s
        self.ping_s = ping_s
        self.retry_s = retry_s
        self._conn: asyncpg.Connection | None = None
        self._held = False
        self._changed = asyncio.Event()
        #: How many times the lock was taken; tests wait for a re-take.
        self.taken = 0
        self.server_pid: int | None = None

    def held(self) -> bool:
        """Whether this instance may claim: its lock is held on a connection still open."""
        return self._held and self._conn is not None and not self._conn.is_closed()

    async def wait_held(self) -> None:
        """Until the lock is held (start-up, tests)."""
        while not self.held():
            self._changed.clear()
            await self._changed.wait()

    async def run(self, stopping: asyncio.Event) -> None:
        """Hold the lock until stopped, re-taking it after a loss; never raises a database
        error. Stopping closes the connection, which releases the lock."""
        await keep_supervised(
            stopping,
            lambda: self._hold(stopping),
            self._lost,
            retry_s=self.retry_s,
            log=log,
            failed=f"the instance lock ({self.owner.replace('%', '%%')}) is not held (%s);"
            " no claims until it is",
        )

    async def _lost(self) -> None:
        self._held = False
        self.server_pid = None
        self._changed.set()
        await self._close()

    async def _hold(self, stopping: asyncio.Event) -> None:
        self._conn = conn = await asyncpg.connect(self.dsn, timeout=5, server_settings=KEEPALIVES)
        tries = 0
        while not await conn.fetchval(Q["take_owner_lock"], self.owner, timeout=5):
            # Another session has it: a sweeper deciding about this owner, for a moment.
            tries += 1
            if tries == 20:
                log.warning(
                    "the instance lock (%s) is still held by another session; no claims until"
                    " it is free",
                    self.owner,
                )
            await pause(stopping, self.check_s)
            if stopping.is_set():
                return
        self._held = True
        self.taken += 1
        self.server_pid = conn.get_server_pid()
        self._changed.set()
        if self.taken > 1:
            log.info("the instance lock (%s) is held again; claiming resumes", self.owner)
        await watch(conn, stopping, check_s=self.check_s, ping_s=self.ping_s)
        if not stopping.is_set():
            log.warning(
                "the connection holding the instance lock (%s) was lost; no claims until it"
                " is taken again",
                self.owner,
            )

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(*CONNECTION_ERRORS, asyncpg.PostgresError):
                await conn.close(timeout=5)
