"""Per-account pacing of outgoing calls, so a burst of cancels does not earn a wall of 429s."""

from __future__ import annotations

import asyncio
import time

from aiolimiter import AsyncLimiter

from orchestrator.providers.base import Account


class Throttle:
    """A leaky bucket per account (aiolimiter), plus a pause when a provider says 'wait'.

    The limit is per process; several instances each keep to it, so set the limit per
    instance when running more than one.
    """

    def __init__(self, accounts: list[Account]) -> None:
        self._limiters = {
            a.key: AsyncLimiter(a.rate_limit_per_min, 60) for a in accounts if a.rate_limit_per_min
        }
        self._paused_until: dict[str, float] = {}

    def pause(self, key: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._paused_until[key] = max(until, self._paused_until.get(key, 0.0))

    def blocked(self) -> list[str]:
        """Accounts that must not be claimed for now: paused, or with no capacity left."""
        now = time.monotonic()
        keys = [k for k, until in self._paused_until.items() if until > now]
        keys += [k for k, limiter in self._limiters.items() if not limiter.has_capacity()]
        return keys

    async def acquire(self, key: str) -> None:
        while (wait := self._paused_until.get(key, 0.0) - time.monotonic()) > 0:
            await asyncio.sleep(wait)  # noqa: ASYNC110 - sleeps exactly to the deadline
        limiter = self._limiters.get(key)
        if limiter is not None:
            await limiter.acquire()
