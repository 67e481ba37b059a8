"""Prototypes of proposed optimisations, applied to the service in memory, for before/after
figures without touching orchestrator/. Each is the smallest change that shows the effect;
once the real change lands in the product, its variant here should be deleted.

    BENCH_VARIANTS=no-reset,fast-multipart python bench/variants.py serve
    .venv/bin/python bench/run.py --variant no-reset,fast-multipart

no-reset        asyncpg pool without the reset query on release (`reset=` a no-op): the
                service keeps no session state (advisory locks are transaction-scoped), so
                the `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
                round trip and transaction after every pool use buys nothing. (Landed in
                f7bd8e9; kept to compare with `with-reset`.)
with-reset      the opposite: asyncpg's default reset query back, whatever the service
                asks for, to measure what dropping it changed.
fast-multipart  the Dropbox Sign callback's `json` field found by splitting on the
                boundary instead of email.parser (which builds a whole MIME message).
statement-counts  cancellation_counts kept by statement-level triggers over transition
                tables (one upsert per status per statement) instead of two plpgsql upserts
                per changed row; applied after the migrations.
uvloop          the uvloop event loop (an optional extra).
quiet-log       ORCH_LOG_LEVEL=WARNING: no INFO line per webhook (set by run.py).
count-queries   not an optimisation: counts the statements (round trips) the service sends,
                by kind, and prints them to its log at exit (run.py --keep-logs).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg


def no_reset() -> None:
    async def keep(_: asyncpg.Connection) -> None:
        """Nothing to undo: open transactions are still rolled back by asyncpg itself."""

    asyncpg.create_pool = functools.partial(asyncpg.create_pool, reset=keep)


def with_reset() -> None:
    create_pool = asyncpg.create_pool

    def default_reset(*args: Any, reset: object = None, **kwargs: Any) -> Any:
        return create_pool(*args, **kwargs)

    asyncpg.create_pool = default_reset


def fast_multipart() -> None:
    from orchestrator import errors
    from orchestrator.providers import dropbox_sign

    boundary_re = re.compile(r'boundary="?([^";\s]+)"?', re.IGNORECASE)

    def field(content_type: str, body: bytes, name: str) -> bytes | None:
        match = boundary_re.search(content_type)
        if match is None:
            raise errors.WebhookRejected(400, "multipart body without a boundary")
        parts = body.split(b"--" + match[1].encode())
        if len(parts) < 3 or not parts[-1].startswith(b"--"):
            raise errors.WebhookRejected(400, "the multipart body is malformed")
        wanted = re.compile(rb';\s*name="?' + re.escape(name.encode()) + rb'"?\s*(;|$)', re.I)
        for part in parts[1:-1]:
            head, sep, content = part.partition(b"\r\n\r\n")
            if not sep:
                raise errors.WebhookRejected(400, "the multipart body is malformed")
            for line in head.split(b"\r\n"):
                if line[:20].lower() == b"content-disposition:" and wanted.search(line):
                    return content[:-2] if content.endswith(b"\r\n") else content
        return None

    dropbox_sign._multipart_field = field


STATEMENT_COUNTS = """
DROP TRIGGER IF EXISTS cancellation_counts_on_insert_delete ON cancellations;
DROP TRIGGER IF EXISTS cancellation_counts_on_status_change ON cancellations;
DROP TRIGGER IF EXISTS cancellation_counts_on_insert ON cancellations;
DROP TRIGGER IF EXISTS cancellation_counts_on_delete ON cancellations;
DROP TRIGGER IF EXISTS cancellation_counts_on_update ON cancellations;

CREATE OR REPLACE FUNCTION cancellation_counts_by_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cancellation_counts AS c (status, shard, n)
        SELECT status, pg_backend_pid(), count(*) FROM new_rows GROUP BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO cancellation_counts AS c (status, shard, n)
        SELECT status, pg_backend_pid(), -count(*) FROM old_rows GROUP BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSE
        INSERT INTO cancellation_counts AS c (status, shard, n)
        SELECT status, pg_backend_pid(), sum(d) FROM (
            SELECT status, -1 AS d FROM old_rows
            UNION ALL
            SELECT status, 1 AS d FROM new_rows
        ) moved
        GROUP BY status HAVING sum(d) <> 0
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER cancellation_counts_on_insert AFTER INSERT ON cancellations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cancellation_counts_by_statement();
CREATE TRIGGER cancellation_counts_on_delete AFTER DELETE ON cancellations
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cancellation_counts_by_statement();
CREATE TRIGGER cancellation_counts_on_update AFTER UPDATE ON cancellations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cancellation_counts_by_statement();
"""


async def apply_statement_counts(conn: asyncpg.Connection) -> None:
    await conn.execute(STATEMENT_COUNTS)


def statement_counts() -> None:
    from orchestrator.store import migrations

    migrate = migrations.migrate

    async def migrate_then_swap(
        conn: asyncpg.Connection, directory: Path = migrations.DEFAULT_DIR
    ) -> list[int]:
        applied = await migrate(conn, directory)
        await apply_statement_counts(conn)
        return applied

    migrations.migrate = migrate_then_swap


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


def use_uvloop() -> None:
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


VARIANTS: dict[str, Callable[[], None]] = {
    "no-reset": no_reset,
    "with-reset": with_reset,
    "fast-multipart": fast_multipart,
    "statement-counts": statement_counts,
    "uvloop": use_uvloop,
    "quiet-log": lambda: None,  # an environment setting; run.py sets it
    "count-queries": count_queries,
}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_VARIANTS", "").split(",")):
        VARIANTS[name]()
    from orchestrator.cli import main as orchestrator

    return orchestrator(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
