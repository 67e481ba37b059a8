"""The rules of domain/webhook_rules.py as the rows of migration 0012's tables.

`python -m tests.rules_sql` prints the INSERTs that 0012_rules_from_python.sql holds (a
migration is static SQL, written once; a later change of a rule is a new migration that
replaces the rows, printed the same way). tests/unit/test_webhook_rules.py checks that the
migration holds exactly this text; tests/integration/test_rules_tables.py that the migrated
tables hold exactly these rows.
"""

from __future__ import annotations

from orchestrator.domain import webhook_rules as rules

#: The column lists, in the order of the rows below.
WEBHOOK_COLUMNS = (
    "target_status",
    "settle_mode",
    "age",
    "check_due",
    "outcome",
    "used",
    "to_status",
    "cause",
)
ATTEMPT_END_COLUMNS = (
    "from_status",
    "any_arrived",
    "result_status",
    "use_arrived",
    "to_status",
    "cause",
)
STORED_EVENT_COLUMNS = ("any_stored", "needs_check", "use_stored")

Row = tuple[str | bool | None, ...]


def _value(enum_or_none: object) -> str | None:
    return None if enum_or_none is None else str(enum_or_none)


def webhook_rows() -> list[Row]:
    rows: list[Row] = []
    for facts in rules.all_webhook_facts():
        action = rules.webhook_action(facts)
        rows.append(
            (
                _value(facts.target) or "none",
                facts.settle_mode,
                facts.age.value,
                facts.check_due,
                action.outcome.value,
                action.used,
                _value(action.to_status),
                _value(action.cause),
            )
        )
    return rows


def attempt_end_rows() -> list[Row]:
    rows: list[Row] = []
    for facts in rules.all_attempt_end_facts():
        action = rules.attempt_end(facts)
        rows.append(
            (
                facts.from_status.value,
                facts.arrived,
                facts.result.value,
                action.use_arrived,
                _value(action.to_status),
                _value(action.cause),
            )
        )
    return rows


def stored_event_rows() -> list[Row]:
    rows: list[Row] = []
    for stored in (False, True):
        action = rules.stored_event_action(stored)
        rows.append((stored, action.needs_check, action.use_stored))
    return rows


def _literal(value: str | bool | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "'" + value.replace("'", "''") + "'"


def insert(table: str, columns: tuple[str, ...], rows: list[Row]) -> str:
    values = ",\n".join("    (" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES\n{values};\n"


def render() -> str:
    return "\n".join(
        (
            insert("webhook_rules", WEBHOOK_COLUMNS, webhook_rows()),
            insert("attempt_end_rules", ATTEMPT_END_COLUMNS, attempt_end_rows()),
            insert("stored_event_rules", STORED_EVENT_COLUMNS, stored_event_rows()),
        )
    )


if __name__ == "__main__":
    print(render(), end="")
