"""What the dashboard's front page reads in one use case (Service.overview)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.domain.model import Cancellation


@dataclass(frozen=True)
class Overdue:
    cancellation: Cancellation
    #: How long past its confirm_by the confirmation is.
    late_s: float


@dataclass(frozen=True)
class Overview:
    at: datetime
    #: The totals of /v1/stats: every status, overdue, last_confirmed_at.
    totals: dict[str, Any]
    #: provider -> status -> count.
    by_provider: dict[str, dict[str, int]]
    overdue: list[Overdue]
    failures: list[Cancellation]
    newest: list[Cancellation]
