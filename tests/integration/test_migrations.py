"""The migration runner: checksums kept, a changed file refused by name, no files refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from orchestrator.store import migrations

#: Migrations already applied in production: their content is fixed for good (add to this list
#: when a release ships a new one). A change belongs in a new file.
RELEASED = {
    "0001_cancellations.sql": "0c44726d38d315b649f826b2c52b143501f0063482107a7967bc543f6f513628",
    "0002_statement_counts.sql": "15b15eb96ac17d545802eda9a39f5b4acbed343e3ec38f76c72f3d0f6027d4d1",
    "0003_one_round_trip.sql": "7fbc90208a0fd234c3e3d66e4bb9342994b7b002eceea6d3c3ecc87e3967773a",
    "0004_count_terminal_statuses.sql": (
        "e450832ba1ebaea79a431301a9fa11cb4d4426b0feead2cbb1979a83d23a2331"
    ),
}


def copy_migrations(directory: Path) -> dict[str, Path]:
    """The shipped migration files copied to `directory`, by file name."""
    copied = {}
    for migration in migrations.discover():
        path = directory / migration.filename
        path.write_text(migration.sql)
        copied[migration.filename] = path
    return copied


async def recorded(db: asyncpg.Connection) -> dict[int, str | None]:
    rows = await db.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return {r["version"]: r["checksum"] for r in rows}


def test_the_installed_package_carries_the_migrations() -> None:
    shipped = migrations.discover()
    versions = [m.version for m in shipped]
    assert versions == sorted(versions)
    assert versions == list(range(1, versions[-1] + 1))  # numbered without gaps
    assert migrations.latest_version() == shipped[-1].version


def test_released_migrations_are_never_edited() -> None:
    shipped = {m.filename: m.checksum for m in migrations.discover()}
    changed = {name for name, checksum in RELEASED.items() if shipped.get(name) != checksum}
    assert not changed, f"released migrations changed (databases would refuse them): {changed}"


def test_only_numbered_files_are_migrations(tmp_path: Path) -> None:
    copy_migrations(tmp_path)
    (tmp_path / migrations.SNAPSHOT).write_text("CREATE TABLE not_a_migration ();")
    (tmp_path / "README.md").write_text("notes")
    assert [m.filename for m in migrations.discover(tmp_path)] == [
        m.filename for m in migrations.discover()
    ]
    (tmp_path / "0009-typo.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match=re.escape("'0009-typo.sql' is not named")):
        migrations.discover(tmp_path)


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_finding_no_migrations_is_an_error(tmp_path: Path, make: str) -> None:
    directory = tmp_path / "migrations"
    if make == "empty":
        directory.mkdir()
        (directory / migrations.SNAPSHOT).write_text("-- only the snapshot")
    with pytest.raises(migrations.MigrationError, match="no migrations found"):
        migrations.discover(directory)


async def test_each_applied_file_is_recorded_with_its_sha256(db: asyncpg.Connection) -> None:
    assert await recorded(db) == {
        m.version: hashlib.sha256(m.sql.encode()).hexdigest() for m in migrations.discover()
    }


async def test_a_file_changed_after_it_was_applied_is_refused_by_name(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    files = copy_migrations(tmp_path)
    changed = files["0002_statement_counts.sql"]
    changed.write_text(changed.read_text() + "\n-- an afterthought\n")
    with pytest.raises(migrations.MigrationError) as caught:
        await migrations.migrate(db, tmp_path)
    assert "0002_statement_counts.sql was changed after it was applied" in str(caught.value)
    # The lock was released: an untouched set of files migrates as before.
    assert await migrations.migrate(db) == []


async def test_a_new_file_after_a_changed_one_is_not_applied(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    files = copy_migrations(tmp_path)
    files["0001_cancellations.sql"].write_text("-- rewritten\n")
    latest = migrations.latest_version()
    (tmp_path / f"{latest + 1:04d}_next.sql").write_text("CREATE TABLE next_one (id int);")
    with pytest.raises(
        migrations.MigrationError, match=re.escape("0001_cancellations.sql was changed")
    ):
        await migrations.migrate(db, tmp_path)
    assert await db.fetchval("SELECT to_regclass('next_one')") is None


async def test_a_table_from_before_checksums_gets_them_from_the_files(
    db: asyncpg.Connection,
) -> None:
    await db.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
    assert await migrations.migrate(db) == []
    assert await recorded(db) == {m.version: m.checksum for m in migrations.discover()}


async def test_an_applied_migration_missing_from_the_release_is_refused(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    files = copy_migrations(tmp_path)
    files["0002_statement_counts.sql"].unlink()
    with pytest.raises(
        migrations.MigrationError, match=re.escape("0002_statement_counts.sql was applied")
    ):
        await migrations.migrate(db, tmp_path)


async def test_a_migration_from_a_newer_release_does_not_stop_this_one(
    db: asyncpg.Connection,
) -> None:
    """A rolled-back release still starts; /readyz says its schema is not the one it expects."""
    newer = migrations.latest_version() + 1
    await db.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, 'newer', 'x')", newer
    )
    assert await migrations.migrate(db) == []


@pytest.mark.parametrize("command", ["migrate", "serve"])
async def test_the_cli_refuses_a_changed_migration_and_names_it(
    dsn: str, db: asyncpg.Connection, command: str, tmp_path: Path
) -> None:
    await db.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 3")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orchestrator", command],
        env={**os.environ, "DATABASE_URL": dsn, "ORCH_HOST": "127.0.0.1", "ORCH_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("orchestrator: migration 0003_one_round_trip.sql was changed")


def test_an_install_without_migrations_cannot_migrate(tmp_path: Path) -> None:
    """What a wheel built without its migrations/ would do: refuse, not report 'applied 0'."""
    package = tmp_path / "orchestrator"
    shutil.copytree(
        Path(migrations.__file__).resolve().parents[1],
        package,
        ignore=shutil.ignore_patterns("__pycache__", "migrations"),
    )
    assert not (package / "migrations").exists()
    result = subprocess.run(
        [sys.executable, "-c", "from orchestrator.store import migrations; migrations.discover()"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert "MigrationError: no migrations found" in result.stderr
