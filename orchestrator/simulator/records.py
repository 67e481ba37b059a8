"""What a simulated provider remembers: its requests, every call, its counters.

Plain data, kept apart from the call pipeline in ``base`` so each reads in one sitting.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Any, Literal

CallKind = Literal["cancel", "status"]

# "canceling" is Dropbox Sign's queued cancel: accepted, not yet done.
STATES = ("open", "canceling", "canceled", "completed", "declined", "expired", "not_found")
SEEDABLE_STATES = frozenset(STATES) - {"canceling"}


def iso(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, the way the providers write times."""
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass
class RequestRecord:
    """One signature request / workflow / action as the provider sees it."""

    provider: str
    id: str
    state: str = "open"
    account: str | None = None
    created_at: float = dataclasses.field(default_factory=time.time)
    canceled_at: float | None = None
    cancel_calls: int = 0
    duplicate_cancel_calls: int = 0
    status_calls: int = 0
    lost_cancels: int = 0
    events: list[str] = dataclasses.field(default_factory=list)
    last_cancel_body: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Counters:
    """``callbacks_sent`` counts deliveries started (a duplicate is a second delivery);
    ``callback_attempts`` counts POSTs, ``callback_failures`` the POSTs that were not accepted.
    """

    cancel_calls: int = 0
    duplicate_cancel_calls: int = 0
    status_calls: int = 0
    unauthorized: int = 0
    rate_limited: int = 0
    calls_before_reset: int = 0
    injected_5xx: int = 0
    injected_status_5xx: int = 0
    injected_resets: int = 0
    resets_after_cancel: int = 0
    errors_after_cancel: int = 0
    injected_slow: int = 0
    injected_redirects: int = 0
    redirects_followed: int = 0
    lost_cancels: int = 0
    callbacks_sent: int = 0
    callback_attempts: int = 0
    callbacks_delivered: int = 0
    callbacks_dropped: int = 0
    callbacks_duplicated: int = 0
    callbacks_late: int = 0
    callback_failures: int = 0
    callbacks_abandoned: int = 0
    callbacks_no_url: int = 0


@dataclasses.dataclass(frozen=True)
class Call:
    """One API call as received; ``status`` is 0 when the connection was dropped."""

    at: float
    account: str | None
    kind: CallKind
    request_id: str | None
    status: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LimitWindow:
    """A 429 told ``account`` to wait from ``start`` until ``until`` (Unix seconds)."""

    account: str | None
    start: float
    until: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
