"""The connection pool, and the one place where driver errors become the project's errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import orjson

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


async def create_pool(dsn: str, size: int) -> asyncpg.Pool:
    # min_size=0: the pool comes up even while the database is down; readiness reports it.
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        timeout=5,
        max_inactive_connection_lifetime=60,
    )
    return pool


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
    except CONNECTION_ERRORS as exc:
        raise errors.DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc
