"""A dedicated connection kept up for the process's life (the instance lock, the change feed).

Both hold one direct connection outside the pool, must notice when it is lost (a Postgres
restart, a failover, a half-open TCP connection that only shows when a query gets no answer),
and connect again after a pause, without ever raising a database error into the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from orchestrator.store.db import CONNECTION_ERRORS
from orchestrator.store.queries import QUERIES as Q


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if stopping is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def keep_supervised(
    stopping: asyncio.Event,
    session: Callable[[], Awaitable[None]],
    after: Callable[[], Awaitable[None] | None],
    *,
    retry_s: float,
    log: logging.Logger,
    failed: str,
) -> None:
    """Run `session` until stopped, again `retry_s` after each end or failure. A database or
    connection error is logged (`failed` % its type) and waited out; `after` runs after every
    session, however it ended."""
    while not stopping.is_set():
        try:
            await session()
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            log.warning(failed, type(exc).__name__)
        finally:
            ended = after()
            if ended is not None:
                await ended
        await pause(stopping, retry_s)


async def watch(
    conn: asyncpg.Connection, stopping: asyncio.Event, *, check_s: float, ping_s: float
) -> None:
    """Until stopped or the connection is closed: its state is looked at every `check_s`, and
    it must answer a query every `ping_s` (a lost answer raises, ending the session)."""
    since_ping = 0.0
    while not stopping.is_set() and not conn.is_closed():
        await pause(stopping, check_s)
        since_ping += check_s
        if since_ping >= ping_s and not conn.is_closed():
            since_ping = 0.0
            await conn.fetchval(Q["ping"], timeout=5)
