"""The connection pool, and the one place where driver errors become the project's errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolAcquireContext

from orchestrator import errors

# What a lost or unreachable database looks like from asyncpg: each becomes a 503.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # What asyncpg raises on a connection the server cut mid-operation (asyncpg #1069, #784).
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset on release: the service keeps no session state (its advisory locks
    are transaction-scoped) and asyncpg still rolls back an open transaction itself. The
    default reset query is a round trip and a transaction after every pool use."""


class PoolTimeout(TimeoutError):
    """No pool connection within the acquire timeout: every one is busy, or a new one could
    not be opened in time. A TimeoutError, so it is a connection error like the others."""


class _BoundedAcquire(PoolAcquireContext):  # type: ignore[misc]  # asyncpg is untyped
    __slots__ = ()

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            connection: asyncpg.Connection = await super().__aenter__()
        except TimeoutError as exc:
            raise PoolTimeout(f"no database connection within {self.timeout:g}s") from exc
        return connection


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg is untyped
    """A pool whose every wait for a connection is bounded, the shortcuts included.

    `pool.fetch(...)` and friends acquire with no timeout of their own: a request would wait
    for as long as every connection is held (or a new one hangs), which is how a database
    outage turns into requests that never answer. Every acquire here, explicit or not, gives
    up after `acquire_timeout_s` unless the caller names its own timeout.
    """

    def __init__(self, dsn: str, *, acquire_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(
            dsn,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            loop=None,
            **kwargs,
        )
        self.acquire_timeout_s = acquire_timeout_s

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return _BoundedAcquire(self, self.acquire_timeout_s if timeout is None else timeout)


async def create_pool(
    dsn: str,
    size: int,
    *,
    acquire_timeout_s: float = 2.0,
    connect_timeout_s: float = 2.0,
    statement_cache: bool = True,
) -> BoundedPool:
    """`statement_cache=False` for a transaction-mode pooler (PgBouncer before 1.21 knows
    nothing of protocol-level prepared statements): asyncpg then uses only the unnamed
    statement, parsed again in the same message group as each execution, so no statement
    outlives the transaction the pooler lent the server connection for."""
    # min_size=0: the pool comes up even while the database is down; readiness reports it.
    pool = BoundedPool(
        dsn,
        acquire_timeout_s=acquire_timeout_s,
        min_size=0,
        max_size=size,
        max_queries=50_000,
        max_inactive_connection_lifetime=60,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        timeout=connect_timeout_s,
        statement_cache_size=100 if statement_cache else 0,
    )
    await pool
    return pool


#: The SQLSTATE of a transition cancellation_transitions lacks (migration 0011).
ILLEGAL_TRANSITION = "TR001"


@contextlib.asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    try:
        yield
    except asyncpg.DataError as exc:  # a value PostgreSQL cannot store, that validation let by
        raise errors.InvalidRequest(
            "a value cannot be stored", [{"field": "body", "message": str(exc)}]
        ) from exc
    except asyncpg.SerializationError as exc:  # never expected at READ COMMITTED
        raise errors.DatabaseUnavailable(f"database conflict: {exc}") from exc
    except PoolTimeout as exc:
        raise errors.DatabaseUnavailable(
            f"database unavailable: {exc} (the pool's connections are all busy, or the"
            " database does not answer)",
            error=type(exc).__name__,
        ) from exc
    except CONNECTION_ERRORS as exc:
        raise errors.DatabaseUnavailable(
            f"database unavailable: {type(exc).__name__}", error=type(exc).__name__
        ) from exc
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != ILLEGAL_TRANSITION:
            raise
        raise errors.IllegalTransition(f"{exc}: {getattr(exc, 'detail', '')}") from exc
