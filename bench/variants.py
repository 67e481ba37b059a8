"""Prototypes of proposed optimisations, applied to the service in memory, for before/after
figures without touching orchestrator/. Each is the smallest change that shows the effect;
once the real change lands in the product, its prototype is deleted here (no-reset landed
in f7bd8e9, fast-multipart and statement-counts in 3b7485f; docs/benchmarks.md keeps what
they measured).

    BENCH_VARIANTS=with-reset python bench/variants.py serve
    .venv/bin/python bench/run.py --variant with-reset --only api,e2e --no-baseline

with-reset      asyncpg's default reset query on every release, whatever the service asks
                for: the code before f7bd8e9, to measure what dropping it changed.
uvloop          the uvloop event loop (an optional extra; pip install uvloop).
no-notify       0005's NOTIFY trigger (pg_notify on every version change) disabled after the
                migrations: what the trigger costs end to end.
statement-cache-off  ORCH_DATABASE_POOLER=transaction (asyncpg's statement cache off), on
                the database itself: the service's own cost of running behind PgBouncer.
count-queries   not an optimisation: counts the statements (round trips) the service sends,
                by kind, and prints them to its log at exit (run.py --keep-logs)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import asyncpg


def with_reset() -> None:
    from orchestrator.store import db

    # create_pool reads _keep_session when it builds the pool: None is asyncpg's default reset.
    db._keep_session = None  # type: ignore[assignment]


def statement_cache_off() -> None:
    """ORCH_DATABASE_POOLER=transaction against the database itself: what running behind a
    transaction pooler costs the service (asyncpg's statement cache off), without a pooler's
    own cost in the figures."""
    if os.environ.get("DATABASE_URL"):
        os.environ.setdefault("DATABASE_DIRECT_URL", os.environ["DATABASE_URL"])
    os.environ["ORCH_DATABASE_POOLER"] = "transaction"


def count_queries() -> None:
    import atexit
    from collections import Counter

    from asyncpg.connection import Connection
    from orchestrator.store.queries import QUERIES

    names = {sql: name for name, sql in QUERIES.items()}
    counts: Counter[str] = Counter()
    execute, _execute = Connection.execute, Connection._execute

    def kind(query: str) -> str:
        return names.get(query) or " ".join(query.split())[:60]

    async def counted_execute(self: Connection, query: str, *args: object, **kw: object) -> str:
        if not args:  # the simple protocol; with arguments it goes through _execute
            counts[kind(query)] += 1
        result: str = await execute(self, query, *args, **kw)
        return result

    async def counted(self: Connection, query: str, *args: object, **kw: object) -> object:
        counts[kind(query)] += 1
        return await _execute(self, query, *args, **kw)

    Connection.execute = counted_execute
    Connection._execute = counted

    def report() -> None:
        print("round trips by statement:", file=sys.stderr)
        for name, n in counts.most_common():
            print(f"{n:8d}  {name}", file=sys.stderr)

    atexit.register(report)


def no_notify() -> None:
    from orchestrator.store import migrations

    migrate = migrations.migrate

    async def migrate_then_disable(conn: asyncpg.Connection, *args: Any, **kw: Any) -> Any:
        applied = await migrate(conn, *args, **kw)
        # On cancellation_state since 0016 (cancellations is a view).
        await conn.execute("ALTER TABLE cancellation_state DISABLE TRIGGER cancellation_changed")
        return applied

    migrations.migrate = migrate_then_disable  # type: ignore[assignment]


def use_uvloop() -> None:
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


VARIANTS: dict[str, Callable[[], None]] = {
    "with-reset": with_reset,
    "uvloop": use_uvloop,
    "count-queries": count_queries,
    "no-notify": no_notify,
    "statement-cache-off": statement_cache_off,
}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_VARIANTS", "").split(",")):
        VARIANTS[name]()
    from orchestrator.cli import main as orchestrator

    return orchestrator(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
