"""A small migration runner: numbered .sql files, applied in order, under an advisory lock.

The files live in the top-level `migrations/` folder of the repository; `orchestrator/migrations`
is a symlink to it, so the editable install and the wheel both find them as package data.

Each applied file's sha256 is kept in `schema_migrations`. A file that changed after it was
applied stops `migrate` and `serve` (as Flyway and sqlx do): the database would otherwise keep
the old definition silently. Changes go in a new file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import asyncpg

log = logging.getLogger(__name__)

# Several instances may start at once; one applies, the others wait and then find nothing to do.
_LOCK_KEY = 7305318220
_FILE = re.compile(r"^(\d{4})_([\w-]+)\.sql$")
#: The generated snapshot of the whole schema (`make schema`) sits beside the migrations.
SNAPSHOT = "schema.sql"

DEFAULT_DIR: Traversable = importlib.resources.files("orchestrator") / "migrations"


class MigrationError(Exception):
    """The migrations cannot be applied as they are; the message says which file and why."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def discover(directory: Traversable = DEFAULT_DIR) -> list[Migration]:
    """The migrations in order; an install without any is broken, not empty."""
    found = []
    entries = sorted(directory.iterdir(), key=lambda e: e.name) if directory.is_dir() else []
    for entry in entries:
        if not entry.name.endswith(".sql") or entry.name == SNAPSHOT:
            continue
        match = _FILE.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_description.sql")
        content = entry.read_bytes()
        checksum = hashlib.sha256(content).hexdigest()
        found.append(Migration(int(match[1]), match[2], content.decode(), checksum))
    if not found:
        raise MigrationError(
            f"no migrations found in {directory}: the installed package is missing its "
            "migrations/ folder (reinstall it from a wheel built from the repository)"
        )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {directory}")
    return found


async def current_version(conn: asyncpg.Connection) -> int | None:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return None
    version: int | None = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    return version


async def migrate(conn: asyncpg.Connection, directory: Traversable = DEFAULT_DIR) -> list[int]:
    """Check what was applied, then apply what is missing; returns the versions applied now."""
    migrations = discover(directory)
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), checksum text)"
        )
        # Tables made before checksums were kept: the files as they are now become the record.
        await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        await _record_missing_checksums(conn, migrations)
        done = await _verify_applied(conn, migrations)
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration %s", migration.filename)
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def _record_missing_checksums(conn: asyncpg.Connection, migrations: list[Migration]) -> None:
    missing = {
        r["version"]
        for r in await conn.fetch("SELECT version FROM schema_migrations WHERE checksum IS NULL")
    }
    for migration in migrations:
        if migration.version in missing:
            await conn.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                migration.version,
                migration.checksum,
            )
            log.info("recorded the checksum of %s, applied before checksums", migration.filename)


async def _verify_applied(conn: asyncpg.Connection, migrations: list[Migration]) -> set[int]:
    """The applied versions, once each is known to match its file."""
    by_version = {m.version: m for m in migrations}
    latest = migrations[-1].version
    applied = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    for row in sorted(applied, key=lambda r: r["version"]):
        version, recorded = row["version"], row["checksum"]
        migration = by_version.get(version)
        if migration is None:
            if version > latest:
                # A newer release migrated this database; /readyz reports the mismatch.
                log.warning("the database has migration %04d, newer than this code", version)
                continue
            raise MigrationError(
                f"migration {version:04d}_{row['name']}.sql was applied to the database "
                "but is missing from this release"
            )
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.filename} was changed after it was applied "
                f"(applied sha256 {recorded[:12]}, file now {migration.checksum[:12]}); "
                "restore the file and put the change in a new migration"
            )
    return {row["version"] for row in applied}


@functools.cache
def latest_version(directory: Traversable = DEFAULT_DIR) -> int:
    """Read once per process: /readyz asks on every probe, and the files do not change."""
    return discover(directory)[-1].version
