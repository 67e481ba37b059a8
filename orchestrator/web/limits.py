"""A token bucket, in memory, per instance: the enqueue rate a token may carry and the
failed-login limit per client address.

Hand-written (twenty lines) rather than a library: aiolimiter was removed earlier as a
dependency, and what is needed here is a non-blocking "may I, and if not how long until I
may" that neither `aiolimiter` (it waits) nor `limits` (storage backends) fits as simply.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; starts full."""

    def __init__(
        self, rate: float, capacity: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._now = now
        self._level = capacity
        self._at = now()

    def _refill(self) -> None:
        now = self._now()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> float:
        self._refill()
        return self._level

    def take_up_to(self, wanted: int) -> int:
        """Take as many whole tokens as are there, up to `wanted`; returns how many."""
        self._refill()
        granted = max(0, min(wanted, int(self._level)))
        self._level -= granted
        return granted

    def wait_for(self, count: float) -> float:
        """Seconds until `count` tokens are there (0 if they are)."""
        self._refill()
        return max(0.0, (min(count, self.capacity) - self._level) / self.rate)


class BucketsByKey:
    """One bucket per key (a client address), the least recently used dropped beyond
    `max_keys`, so a flood of addresses cannot grow memory without bound."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        max_keys: int = 10_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.capacity, self.max_keys, self._now = rate, capacity, max_keys, now
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def get(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.capacity, self._now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket
