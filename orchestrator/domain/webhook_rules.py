"""What a provider's callback does to a cancellation: three rules over a few finite facts.

A verified callback (a webhook event with an effect, kept in the inbox) may settle the open
cancellation it reports, make its next attempt a status check, or wait for the attempt in
flight; an attempt's end uses the callbacks that arrived during it; an enqueue uses the
callbacks stored before it. Each rule here is a pure function from facts (enums and booleans,
never times: the comparisons are made where the row is locked) to an action, so a table test
reaches every branch without a database.

Postgres carries the actions out in the same round trip as before: migration 0012 holds each
rule as a table of every combination of its facts (webhook_rules, attempt_end_rules,
stored_event_rules), and the plpgsql functions record_webhook_event, apply_attempt_decision
and enqueue_cancellation compute the facts under their locks, look the action up and do what
it says. tests/integration/test_rules_tables.py keeps each table equal to the function here;
`python -m tests.rules_sql` prints the tables' INSERTs from these functions.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.domain.lifecycle import Cause
from orchestrator.domain.model import Status


class WebhookOutcome(enum.StrEnum):
    """What record_webhook_event returns; DUPLICATE is the inbox's dedupe, not a rule's."""

    DUPLICATE = "duplicate"
    #: Kept, unused: no open cancellation to act on (an enqueue will use it).
    STORED = "stored"
    #: The event settled the open cancellation (its own decision: confirmed or failed).
    APPLIED = "applied"
    #: The next attempt is a status check, due now.
    CHECK = "check"
    #: As CHECK, but a check was already due or an attempt in flight: nothing more asked.
    COALESCED = "coalesced"


class EventAge(enum.StrEnum):
    """The event's time against the cancellation's first cancel call, read in this order."""

    #: The event carries no time.
    UNKNOWN = "unknown"
    #: No cancel call has been sent yet (first_sent_at is NULL).
    NOT_SENT = "not_sent"
    #: Older than the first cancel call minus the allowed skew: it may predate our cancel.
    OLDER = "older"
    #: At or after the first cancel call minus the skew (the edge itself is fresh).
    FRESH = "fresh"


#: The one transition a callback asks for when it may not settle: a status check, due now.
CHECK_STATUS, CHECK_CAUSE = Status.QUEUED, Cause.WEBHOOK_NEEDS_CHECK
_OPEN = (Status.QUEUED, Status.SENDING, Status.AWAITING_CONFIRMATION)


@dataclass(frozen=True)
class WebhookFacts:
    #: The open cancellation for the event's resource, locked; None when there is none (or
    #: the event has no effect or no resource).
    target: Status | None
    #: Callbacks may settle (DROPBOX_SIGN_CONFIRM_BY=webhook); else they only prompt checks.
    settle_mode: bool
    age: EventAge
    #: The target's next attempt already is a status check that is due (needs_check and
    #: next_attempt_at <= now), whatever its status.
    check_due: bool


@dataclass(frozen=True)
class WebhookAction:
    outcome: WebhookOutcome
    #: The event is stored marked as used; otherwise it waits (processed_at NULL): for a
    #: later enqueue when there is no target, for the attempt in flight when there is.
    used: bool
    #: The transition carried out, (CHECK_STATUS, CHECK_CAUSE) for a check; None for none
    #: and for APPLIED, whose status is the event's own decision (lifecycle.from_webhook).
    to_status: Status | None = None
    cause: Cause | None = None

    @property
    def pending(self) -> bool:
        """Left for the attempt in flight, whose end uses it (attempt_end)."""
        return self.outcome is not WebhookOutcome.STORED and not self.used


def webhook_action(facts: WebhookFacts) -> WebhookAction:
    """A verified event with an effect, for the open cancellation `facts.target`.

    It settles the cancellation only in settle mode and only if it is no older than the first
    cancel call minus the skew (an older or undated event may describe the request before our
    cancel; one before any cancel call cannot confirm it). Otherwise it asks for one status
    check: during an attempt it waits for that attempt's end, and a check already due is not
    asked for twice."""
    if facts.target is None:
        return WebhookAction(WebhookOutcome.STORED, used=False)
    if facts.settle_mode and facts.age is EventAge.FRESH:
        return WebhookAction(WebhookOutcome.APPLIED, used=True, cause=Cause.WEBHOOK)
    if facts.target is Status.SENDING:
        return WebhookAction(WebhookOutcome.COALESCED, used=False)
    if facts.target is Status.QUEUED and facts.check_due:
        return WebhookAction(WebhookOutcome.COALESCED, used=True)
    return WebhookAction(WebhookOutcome.CHECK, used=True, to_status=CHECK_STATUS, cause=CHECK_CAUSE)


def all_webhook_facts() -> Iterator[WebhookFacts]:
    for target, settle_mode, age, check_due in itertools.product(
        (None, *_OPEN), (False, True), EventAge, (False, True)
    ):
        yield WebhookFacts(target, settle_mode, age, check_due)


@dataclass(frozen=True)
class AttemptEndFacts:
    #: The status the write starts from (the one the caller read under the fence).
    from_status: Status
    #: Events linked to the cancellation are still unused (left pending by webhook_action).
    arrived: bool
    #: The status the write left the row in.
    result: Status


@dataclass(frozen=True)
class AttemptEndAction:
    #: Mark the arrived events used (evidence `arrived_during_attempt` if a check follows).
    use_arrived: bool
    #: A second transition, (CHECK_STATUS, CHECK_CAUSE), or None.
    to_status: Status | None = None
    cause: Cause | None = None


def attempt_end(facts: AttemptEndFacts) -> AttemptEndAction:
    """After a write: only the end of an attempt (a write from `sending`) uses the events
    that arrived during it, and if the attempt leaves the request awaiting confirmation they
    make one status check due now, however many arrived; a settled or requeued row needs no
    more (a requeued attempt checks or cancels anyway)."""
    if facts.from_status is not Status.SENDING or not facts.arrived:
        return AttemptEndAction(use_arrived=False)
    if facts.result is Status.AWAITING_CONFIRMATION:
        return AttemptEndAction(use_arrived=True, to_status=CHECK_STATUS, cause=CHECK_CAUSE)
    return AttemptEndAction(use_arrived=True)


def all_attempt_end_facts() -> Iterator[AttemptEndFacts]:
    for from_status, arrived, result in itertools.product(Status, (False, True), Status):
        yield AttemptEndFacts(from_status, arrived, result)


@dataclass(frozen=True)
class StoredEventAction:
    #: The new cancellation's first attempt asks for the status first (evidence
    #: `stored_events`).
    needs_check: bool
    #: The stored events are marked used and linked to the new cancellation.
    use_stored: bool


def stored_event_action(stored: bool) -> StoredEventAction:
    """At an enqueue: callbacks stored for the resource before it (unused, with an effect)
    may describe the request before our cancel, so they settle nothing; they make the first
    attempt a status check, and are used by it."""
    return StoredEventAction(needs_check=stored, use_stored=stored)
