"""Shared fixtures: a real PostgreSQL per session, one migrated template, a clone per test.

TEST_DATABASE_URL points the suite at an existing server; otherwise an embedded server is
started once per session in a temporary directory (procrastinate's template-clone pattern).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from orchestrator.store import migrations
from orchestrator.store.embedded import EmbeddedPostgres

TEMPLATE = "orchestrator_template"
_counter = itertools.count()


def with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _build_template(server_dsn: str) -> None:
    await _admin(
        server_dsn,
        f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)",
        f"CREATE DATABASE {TEMPLATE}",
    )
    conn = await asyncpg.connect(with_database(server_dsn, TEMPLATE))
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The DSN of a server this session may create databases on."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    # Not under pytest's basetemp: each pytest session resets that tree to mode 0700, which
    # would lock the server's own system user out while another session is running.
    data_dir = Path(tempfile.mkdtemp(prefix="orchestrator-test-pg-"))
    server = EmbeddedPostgres(data_dir)
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_dsn(pg_server: str) -> str:
    asyncio.run(_build_template(pg_server))
    return with_database(pg_server, TEMPLATE)


@pytest.fixture
def dsn(pg_server: str, template_dsn: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards.

    The SQL's own transitions (claims, requeues, releases, webhooks) cannot drift from
    lifecycle.TRANSITIONS: Postgres refuses any the cancellation_transitions table lacks as it
    is written (0011), and tests/integration/test_transitions_table.py keeps that table equal
    to TRANSITIONS.
    """
    name = f"test_{os.getpid()}_{next(_counter)}"
    asyncio.run(_admin(pg_server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    test_dsn = with_database(pg_server, name)
    try:
        yield test_dsn
        halves = asyncio.run(_halves_disagree(test_dsn))
        assert not halves, f"cancellation_requests and cancellation_state disagree: {halves}"
    finally:
        asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


#: Cancellations whose two halves (0016) disagree: a request without its state or a state
#: without its request, or a state whose copies of the request's columns differ from it.
#: `dsn` checks what every test left behind.
HALVES_DISAGREE = """
SELECT coalesce(r.id, s.id) AS id,
       CASE WHEN s.id IS NULL THEN 'no state' WHEN r.id IS NULL THEN 'no request'
            ELSE 'copies differ' END AS what
FROM cancellation_requests r FULL JOIN cancellation_state s ON s.id = r.id
WHERE r.id IS NULL OR s.id IS NULL
   OR (r.provider, r.account, r.resource_id, r.callback_url)
      IS DISTINCT FROM (s.provider, s.account, s.resource_id, s.callback_url)
"""


async def _halves_disagree(dsn: str) -> list[tuple[str, str]]:
    """What HALVES_DISAGREE finds; nothing in a database without the two tables (a test of
    the migrations themselves) or that no longer answers (a test that stopped its server)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return []
    try:
        if await conn.fetchval("SELECT to_regclass('cancellation_state')") is None:
            return []
        return [(str(r["id"]), r["what"]) for r in await conn.fetch(HALVES_DISAGREE)]
    finally:
        await conn.close()


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test's database, for assertions on what was stored."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
