"""Completion callbacks at enqueue: which callback_url the orchestrator agrees to call.

The delivery itself is orchestrator/workers/callbacks.py; the outbox it reads is filled by
the database, in the transaction that ends a cancellation (0006_completion_callbacks.sql).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from orchestrator import errors

FIELD = "callback_url"


@dataclass(frozen=True)
class CallbackPolicy:
    #: A signing secret is configured (ORCH_CALLBACK_SECRET): without one nothing is sent,
    #: so a callback_url is refused rather than accepted and never called.
    enabled: bool = False
    #: Host names a callback_url may name (ORCH_CALLBACK_HOSTS); empty means any.
    hosts: frozenset[str] = frozenset()


def check_callback_url(url: str, policy: CallbackPolicy) -> None:
    """Raise InvalidRequest naming callback_url if this orchestrator will not call `url`."""
    if not policy.enabled:
        raise errors.InvalidRequest.field(
            FIELD, "completion callbacks are not configured here (ORCH_CALLBACK_SECRET is unset)"
        )
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if policy.hosts and host not in policy.hosts:
        raise errors.InvalidRequest.field(
            FIELD, f"host {host!r} is not one of the allowed callback hosts"
        )
