"""Changes announced by PostgreSQL, fanned out to whoever waits in this process.

Every change of a cancellation's version fires `pg_notify('cancellation_changed', id)`
(0005_outcomes_that_hold.sql), whichever instance made it. One dedicated connection per
process LISTENs on that channel; a long poll subscribes to one id and gets a future that the
next notification for that id resolves. Notifications sent while the connection is down are
lost, so every (re)connection, and every loss, wakes every waiter: each reads its row again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator

import asyncpg

from orchestrator.store.db import CONNECTION_ERRORS
from orchestrator.store.supervised import keep_supervised, watch

log = logging.getLogger(__name__)

CHANNEL = "cancellation_changed"


class ChangeFeed:
    """Subscribe to a cancellation's changes; `run()` keeps the listening connection up."""

    def __init__(
        self,
        dsn: str,
        *,
        check_s: float = 1.0,
        ping_s: float = 30.0,
        retry_s: float = 1.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        #: How often the connection's state is looked at, and how often it is asked to answer
        #: (a half-open connection only shows when a query gets no answer).
        self.check_s = check_s
        self.ping_s = ping_s
        self.retry_s = retry_s
        self._waiters: dict[uuid.UUID, set[asyncio.Future[None]]] = {}
        self._listening = asyncio.Event()
        self._closed = False
        #: How many times the connection was established; tests wait for a reconnection.
        self.connections = 0
        self.server_pid: int | None = None

    # --- the waiters' side ------------------------------------------------------------------

    @contextlib.contextmanager
    def subscribe(self, cancellation_id: uuid.UUID) -> Iterator[asyncio.Future[None]]:
        """A future resolved by the next change of this cancellation (or a wake of everyone).
        Subscribe before reading the row, so a change between the read and the wait is seen."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_result(None)
        waiters = self._waiters.setdefault(cancellation_id, set())
        waiters.add(future)
        try:
            yield future
        finally:
            waiters.discard(future)
            if not waiters and self._waiters.get(cancellation_id) is waiters:
                del self._waiters[cancellation_id]

    def waiting(self, cancellation_id: uuid.UUID) -> int:
        return len(self._waiters.get(cancellation_id, ()))

    @property
    def closed(self) -> bool:
        return self._closed

    async def listening(self) -> None:
        """Until the connection LISTENs (tests; start-up does not wait for it)."""
        await self._listening.wait()

    def close(self) -> None:
        """Shutting down: every wait ends now, and new ones do not start."""
        self._closed = True
        self._wake_all()

    # --- the connection's side --------------------------------------------------------------

    def _wake(self, cancellation_id: uuid.UUID) -> None:
        for future in self._waiters.get(cancellation_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for cancellation_id in list(self._waiters):
            self._wake(cancellation_id)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            cancellation_id = uuid.UUID(payload)
        except ValueError:
            log.warning("ignoring a %s notification with payload %r", CHANNEL, payload)
            return
        self._wake(cancellation_id)

    async def run(self, stopping: asyncio.Event) -> None:
        """Listen until stopped, reconnecting after a loss; never raises a database error
        (refused, too many connections, a database being dropped: waited out)."""
        await keep_supervised(
            stopping,
            lambda: self._listen(stopping),
            self._lost,
            retry_s=self.retry_s,
            log=log,
            failed="listening for changes failed (%s); retrying",
        )

    def _lost(self) -> None:
        self._listening.clear()
        self.server_pid = None
        self._wake_all()

    async def _listen(self, stopping: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn, timeout=self.connect_timeout_s)
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            self.connections += 1
            self.server_pid = conn.get_server_pid()
            self._listening.set()
            self._wake_all()  # what changed while nobody listened is read again
            if self.connections > 1:
                log.info("listening for changes again")
            await watch(conn, stopping, check_s=self.check_s, ping_s=self.ping_s)
            if not stopping.is_set():
                log.warning("the connection listening for changes was lost; reconnecting")
        finally:
            if not conn.is_closed():
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await conn.close(timeout=5)
