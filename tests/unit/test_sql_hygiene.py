"""All SQL lives in queries.sql, named once; Python passes parameters and never builds SQL."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from orchestrator.store import queries

PACKAGE = Path(queries.__file__).resolve().parents[1]
QUERIES_SQL = PACKAGE / "store" / "queries.sql"
#: The migration runner is the one other place that talks SQL: its own bookkeeping.
MIGRATION_RUNNER = PACKAGE / "store" / "migrations.py"

SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")
DRIVER_CALLS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "cursor", "prepare"}


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _literal_text(node: ast.AST) -> str:
    """The constant text inside an expression (the literal parts of f-strings included)."""
    return " ".join(
        part.value
        for part in ast.walk(node)
        if isinstance(part, ast.Constant) and isinstance(part.value, str)
    )


def built_sql(source: str) -> list[tuple[int, str]]:
    """Expressions that build SQL text: f-strings, %, .format() and + with an SQL keyword."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            kind = "f-string"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            kind = "%" if isinstance(node.op, ast.Mod) else "+"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
        ):
            kind = ".format"
            node = node.func.value
        else:
            continue
        if SQL_WORD.search(_literal_text(node)):
            found.append((node.lineno, kind))
    return found


def literal_sql_calls(source: str) -> list[int]:
    """Driver calls whose statement is written in place instead of taken from QUERIES."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DRIVER_CALLS
            and node.args
            and not isinstance(node.args[0], ast.Subscript)
            and SQL_WORD.search(_literal_text(node.args[0]))
        ):
            found.append(node.lineno)
    return found


# --- queries.sql ----------------------------------------------------------------------


def test_every_query_parses_under_a_unique_name() -> None:
    text = QUERIES_SQL.read_text()
    headers = re.findall(r"^-- name: (\w+)\s*$", text, re.MULTILINE)
    parsed = queries.parse(text)
    assert headers, "queries.sql declares no queries"
    assert len(headers) == len(set(headers)), sorted(h for h in headers if headers.count(h) > 1)
    assert list(parsed) == headers
    assert parsed == queries.QUERIES


def test_every_query_has_a_statement() -> None:
    for name, sql in queries.QUERIES.items():
        statement = "\n".join(
            line for line in sql.splitlines() if not line.lstrip().startswith("--")
        ).strip()
        assert SQL_WORD.search(statement) or statement.startswith("WITH"), name
        assert "-- name:" not in sql, name


def test_a_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


#: Statements whose purpose is to read the database's own clock.
READS_THE_DATABASE_CLOCK = {"database_clock"}


def test_queries_take_times_as_parameters() -> None:
    """The clock is injected: a statement that reads now() could not be tested by moving it."""
    for name, sql in queries.QUERIES.items():
        if name in READS_THE_DATABASE_CLOCK:
            continue
        code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
        assert not re.search(r"\b(now\(\)|current_timestamp|clock_timestamp)", code, re.I), name


def test_every_referenced_query_exists() -> None:
    used: set[str] = set()
    for path in python_files():
        used |= set(re.findall(r"\b(?:Q|QUERIES)\[\"(\w+)\"\]", path.read_text()))
    assert used, "no module reads QUERIES"
    assert used <= set(queries.QUERIES), sorted(used - set(queries.QUERIES))


# --- Python never builds SQL ----------------------------------------------------------


@pytest.mark.parametrize(
    "snippet",
    [
        'q = f"SELECT * FROM t WHERE id = {x}"',
        'q = "DELETE FROM t WHERE id = %s" % x',
        'q = "UPDATE t SET a = {}".format(x)',
        'q = "INSERT INTO t VALUES (" + x + ")"',
        'q = "SELECT a FROM t " + where',
    ],
)
def test_the_detector_finds_built_sql(snippet: str) -> None:
    assert built_sql(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        'msg = f"cancellation {x} updated"',
        'msg = "update %s" % x',
        "total = a + b",
        'q = Q["get_cancellation"]',
        'label = "Retry-After: {}".format(x)',
    ],
)
def test_the_detector_leaves_other_strings_alone(snippet: str) -> None:
    assert not built_sql(snippet)


def test_the_detector_finds_sql_written_at_the_call() -> None:
    assert literal_sql_calls('await conn.fetchval("SELECT 1")') == [1]
    assert literal_sql_calls('await conn.fetchval(Q["ping"])') == []


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_builds_sql_from_strings(path: Path) -> None:
    assert built_sql(path.read_text()) == []


def test_sql_is_only_sent_from_queries_or_the_migration_runner() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in python_files()
        if path != MIGRATION_RUNNER and (lines := literal_sql_calls(path.read_text()))
    }
    assert offenders == {}


def test_one_statement_writes_the_history() -> None:
    """Issue 18: the trigger record_transition (0011) is the history's one writer; every
    transition only sets transition_cause/transition_evidence on the row it changes."""
    schema = (PACKAGE.parent / "migrations" / "schema.sql").read_text()
    inserts = re.compile(r"INSERT\s+INTO\s+(?:public\.)?cancellation_events\b", re.IGNORECASE)
    found = {
        path: len(inserts.findall(text))
        for path, text in (("schema.sql", schema), ("queries.sql", QUERIES_SQL.read_text()))
    }
    assert found == {"schema.sql": 1, "queries.sql": 0}, found
