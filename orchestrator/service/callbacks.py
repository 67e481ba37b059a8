"""Completion callbacks at enqueue: which callback_url the orchestrator agrees to call.

The delivery itself is orchestrator/workers/callbacks.py; the outbox it reads is filled by
the database, in the transaction that ends a cancellation (0006_completion_callbacks.sql).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator import errors
from orchestrator.domain.destinations import CallbackHosts, Verdict

FIELD = "callback_url"


@dataclass(frozen=True)
class CallbackPolicy:
    #: A signing secret is configured (ORCH_CALLBACK_SECRET): without one nothing is sent,
    #: so a callback_url is refused rather than accepted and never called.
    enabled: bool = False
    #: Where a callback_url may point (ORCH_CALLBACK_HOSTS). Checked here and again at
    #: delivery (workers/callback_net.py), which is the check that counts.
    hosts: CallbackHosts = field(default_factory=CallbackHosts)


def check_callback_url(url: str, policy: CallbackPolicy) -> None:
    """Raise InvalidRequest naming callback_url if this orchestrator will not call `url`."""
    if not policy.enabled:
        raise errors.InvalidRequest.field(
            FIELD, "completion callbacks are not configured here (ORCH_CALLBACK_SECRET is unset)"
        )
    decision = policy.hosts.decide(url)
    if decision.verdict is Verdict.REFUSED:
        raise errors.InvalidRequest.field(FIELD, decision.reason)
