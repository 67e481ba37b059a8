"""What a callback does to a cancellation, as tables: facts -> action, no database.

Postgres looks these actions up in migration 0012's tables (tests/integration/
test_rules_tables.py keeps them equal); the last tests here check the migration's text and
that every transition a rule asks for is one lifecycle.TRANSITIONS allows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.domain import lifecycle
from orchestrator.domain import webhook_rules as rules
from orchestrator.domain.lifecycle import Cause
from orchestrator.domain.model import Status
from orchestrator.domain.webhook_rules import (
    AttemptEndAction,
    AttemptEndFacts,
    EventAge,
    WebhookAction,
    WebhookFacts,
    WebhookOutcome,
)
from tests import rules_sql

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

Q, S, A = Status.QUEUED, Status.SENDING, Status.AWAITING_CONFIRMATION
C, F = Status.CONFIRMED, Status.FAILED
FRESH, OLDER, UNKNOWN, NOT_SENT = (
    EventAge.FRESH,
    EventAge.OLDER,
    EventAge.UNKNOWN,
    EventAge.NOT_SENT,
)

STORED = WebhookAction(WebhookOutcome.STORED, used=False)
APPLIED = WebhookAction(WebhookOutcome.APPLIED, used=True, cause=Cause.WEBHOOK)
CHECK = WebhookAction(WebhookOutcome.CHECK, used=True, to_status=Q, cause=Cause.WEBHOOK_NEEDS_CHECK)
#: Left for the attempt in flight: its end uses the event (and maybe asks for the check).
PENDING = WebhookAction(WebhookOutcome.COALESCED, used=False)
#: A check is already due: the event is used as evidence, nothing more asked.
ALREADY_DUE = WebhookAction(WebhookOutcome.COALESCED, used=True)


@pytest.mark.parametrize(
    ("target", "settle_mode", "age", "check_due", "expected"),
    [
        # No open cancellation (or no effect, no resource): kept for a later enqueue.
        (None, True, FRESH, False, STORED),
        (None, False, UNKNOWN, True, STORED),
        # Settle mode and fresh (the edge, first send minus the skew, is fresh): settles,
        # whatever the status, even during an attempt.
        (Q, True, FRESH, False, APPLIED),
        (Q, True, FRESH, True, APPLIED),
        (S, True, FRESH, False, APPLIED),
        (A, True, FRESH, False, APPLIED),
        # Settle mode, but older than first send minus the skew, undated, or before any
        # cancel call: only a check.
        (A, True, OLDER, False, CHECK),
        (A, True, UNKNOWN, False, CHECK),
        (Q, True, NOT_SENT, False, CHECK),
        # Confirm by status (the default): never settles, even when fresh.
        (A, False, FRESH, False, CHECK),
        (Q, False, FRESH, False, CHECK),
        # An attempt in flight: pending, however the event is dated.
        (S, False, FRESH, False, PENDING),
        (S, True, OLDER, False, PENDING),
        (S, True, UNKNOWN, True, PENDING),
        (S, False, NOT_SENT, True, PENDING),
        # A queued row whose check is already due: coalesced, and the event is used.
        (Q, False, FRESH, True, ALREADY_DUE),
        (Q, True, OLDER, True, ALREADY_DUE),
        (Q, True, NOT_SENT, True, ALREADY_DUE),
        # Only a queued row's due check coalesces; awaiting asks for its own.
        (A, False, OLDER, True, CHECK),
    ],
)
def test_webhook_action(
    target: Status | None,
    settle_mode: bool,
    age: EventAge,
    check_due: bool,
    expected: WebhookAction,
) -> None:
    assert rules.webhook_action(WebhookFacts(target, settle_mode, age, check_due)) == expected


def test_only_a_fresh_event_in_settle_mode_settles() -> None:
    """Over every combination of facts: the defences hold whatever else is true."""
    for facts in rules.all_webhook_facts():
        action = rules.webhook_action(facts)
        settles = action.outcome is WebhookOutcome.APPLIED
        assert settles == (facts.target is not None and facts.settle_mode and facts.age is FRESH), (
            facts
        )
        assert action.pending == (facts.target is S and not settles), facts


@pytest.mark.parametrize(
    ("from_status", "arrived", "result", "expected"),
    [
        # The attempt ends awaiting confirmation and callbacks arrived during it: one check.
        (S, True, A, AttemptEndAction(True, Q, Cause.WEBHOOK_NEEDS_CHECK)),
        # They are used whatever the result; a settled or requeued row asks for nothing more.
        (S, True, C, AttemptEndAction(True)),
        (S, True, F, AttemptEndAction(True)),
        (S, True, Q, AttemptEndAction(True)),
        # None arrived: nothing to use, no check.
        (S, False, A, AttemptEndAction(False)),
        (S, False, C, AttemptEndAction(False)),
        # Not the end of an attempt (an operator's retry or abandon, the sweeper): untouched.
        (Q, True, Q, AttemptEndAction(False)),
        (Q, True, F, AttemptEndAction(False)),
        (A, True, Q, AttemptEndAction(False)),
        (A, True, F, AttemptEndAction(False)),
    ],
)
def test_attempt_end(
    from_status: Status, arrived: bool, result: Status, expected: AttemptEndAction
) -> None:
    assert rules.attempt_end(AttemptEndFacts(from_status, arrived, result)) == expected


@pytest.mark.parametrize(
    ("stored", "needs_check", "use_stored"), [(False, False, False), (True, True, True)]
)
def test_stored_events_make_the_first_attempt_a_check(
    stored: bool, needs_check: bool, use_stored: bool
) -> None:
    action = rules.stored_event_action(stored)
    assert (action.needs_check, action.use_stored) == (needs_check, use_stored)


def test_every_transition_a_rule_asks_for_is_legal() -> None:
    for facts in rules.all_webhook_facts():
        action = rules.webhook_action(facts)
        if action.outcome is WebhookOutcome.APPLIED:
            for end in (C, F):  # the event's own decision: lifecycle.from_webhook
                assert lifecycle.is_legal(facts.target, end, Cause.WEBHOOK), facts
        elif action.to_status is not None:
            assert action.cause is not None
            assert lifecycle.is_legal(facts.target, action.to_status, action.cause), facts
    for end in rules.all_attempt_end_facts():
        done = rules.attempt_end(end)
        if done.to_status is not None:
            assert done.cause is not None
            assert lifecycle.is_legal(end.result, done.to_status, done.cause), end


def test_the_migration_holds_every_rule_as_printed_by_rules_sql() -> None:
    """A migration is static SQL; the newest one that fills the rules tables (0012 so far)
    holds `python -m tests.rules_sql`'s output verbatim. A changed rule fails here first:
    print the rows again into a new migration that replaces them."""
    filling = [
        p
        for p in sorted(MIGRATIONS.glob("[0-9]*.sql"))
        if "INSERT INTO webhook_rules" in p.read_text()
    ]
    assert filling, "no migration fills webhook_rules"
    assert rules_sql.render() in filling[-1].read_text()
    assert len(rules_sql.webhook_rows()) == 4 * 2 * 4 * 2
    assert len(rules_sql.attempt_end_rows()) == len(Status) * 2 * len(Status)
