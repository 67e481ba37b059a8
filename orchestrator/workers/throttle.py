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
        self._accounts = len(accounts)

    def pause(self, key: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._paused_until[key] = max(until, self._paused_until.get(key, 0.0))

    def blocked(self) -> list[str]:
        """Accounts that must not be claimed for now: paused, or with no capacity left."""
        now = time.monotonic()
        keys = [k for k, until in self._paused_until.items() if until > now]
        keys += [k for k, limiter in self._limiters.items() if not limiter.has_capacity()]
        return keys

    def headroom(self, most: int) -> int:
        """How many calls (at most `most`) some unblocked account could make right now.

        The dispatcher claims no more than this, so claimed rows do not sit out their lease
        waiting for the limiter. With several accounts it is the largest headroom of any.
        """
        if not self._limiters:
            return most
        best = 0
        for limiter in self._limiters.values():
            low, high = best, most  # the largest n in [low, high] with capacity for n
            while low < high:
                mid = (low + high + 1) // 2
                if limiter.has_capacity(mid):
                    low = mid
                else:
                    high = mid - 1
            best = low
        unlimited = len(self._limiters) < self._accounts
        return most if unlimited else best

    async def acquire(self, key: str) -> None:
        # A pause can be extended while we sleep (another 429), hence the loop.
        while (wait := self._paused_until.get(key, 0.0) - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        limiter = self._limiters.get(key)
        if limiter is not None:
            await limiter.acquire()
