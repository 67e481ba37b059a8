"""Per-account pacing of outgoing calls, so a burst of cancels does not earn a wall of 429s."""

from __future__ import annotations

import asyncio

from aiolimiter import AsyncLimiter

from orchestrator.clock import Clock, SystemClock
from orchestrator.providers.base import Account


class Throttle:
    """A leaky bucket per account (aiolimiter), plus a pause when a provider says 'wait'.

    The limit is per process; several instances each keep to it, so set the limit per
    instance when running more than one.
    """

    def __init__(self, accounts: list[Account], clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._limiters = {
            a.key: AsyncLimiter(a.rate_limit_per_min, 60) for a in accounts if a.rate_limit_per_min
        }
        self._paused_until: dict[str, float] = {}

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def pause(self, key: str, seconds: float) -> None:
        until = self._now() + seconds
        self._paused_until[key] = max(until, self._paused_until.get(key, 0.0))

    def paused(self) -> list[str]:
        now = self._now()
        return [k for k, until in self._paused_until.items() if until > now]

    def limited(self) -> list[str]:
        return list(self._limiters)

    def headroom(self, most: int) -> dict[str, int]:
        """For each rate-limited account not paused: how many calls (up to `most`) it may make
        right now. The dispatcher claims no more, so claimed rows never sit out their lease
        waiting for the limiter."""
        paused = set(self.paused())
        rooms = {}
        for key, limiter in self._limiters.items():
            if key in paused:
                continue
            low, high = 0, most  # the largest n with capacity for n calls
            while low < high:
                mid = (low + high + 1) // 2
                if limiter.has_capacity(mid):
                    low = mid
                else:
                    high = mid - 1
            if low:
                rooms[key] = low
        return rooms

    async def acquire(self, key: str) -> None:
        # Another 429 may extend the pause while we sleep, hence the loop. A clock that does
        # not move while we sleep (a test's manual clock) cannot end a pause: stop waiting.
        while (wait := self._paused_until.get(key, 0.0) - self._now()) > 0:
            before = self._now()
            await asyncio.sleep(wait)
            if self._now() == before:
                break
        limiter = self._limiters.get(key)
        if limiter is not None:
            await limiter.acquire()
