"""Outgoing callbacks (Dropbox Sign events, Truto webhooks) with the callback faults.

The drop / duplicate / late faults are decided once per event here, so both providers
misbehave the same way; each delivery then retries with capped exponential backoff until
the receiver accepts it, like the real senders do (over days there, over seconds here).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping

import aiohttp

from orchestrator.simulator.base import ProviderSimulator

Accept = Callable[[int, str], bool]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_tries: int
    backoff_s: float
    backoff_max_s: float
    timeout_s: float


def send(
    provider: ProviderSimulator,
    url: str | None,
    body: bytes,
    headers: Mapping[str, str],
    accept: Accept,
    policy: RetryPolicy,
) -> None:
    """Start delivering ``body`` to ``url`` in the background, faults permitting."""
    counters = provider.counters
    if url is None:
        counters.callbacks_no_url += 1
        return
    faults = provider.faults
    if faults.chance("drop_callback_rate"):
        counters.callbacks_dropped += 1
        return
    copies = 2 if faults.chance("duplicate_callback_rate") else 1
    counters.callbacks_duplicated += copies - 1
    delay = 0.0
    if faults.chance("late_callback_rate"):
        counters.callbacks_late += 1
        delay = faults.late_callback_s
    for copy in range(copies):
        counters.callbacks_sent += 1
        provider.spawn(
            _deliver(provider, url, body, dict(headers), accept, policy, delay),
            name=f"callback-{counters.callbacks_sent}-{copy}",
        )


async def _deliver(
    provider: ProviderSimulator,
    url: str,
    body: bytes,
    headers: dict[str, str],
    accept: Accept,
    policy: RetryPolicy,
    delay: float,
) -> None:
    counters = provider.counters
    if delay:
        await asyncio.sleep(delay)
    timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
    for attempt in range(policy.max_tries):
        if attempt:
            await asyncio.sleep(min(policy.backoff_s * 2 ** (attempt - 1), policy.backoff_max_s))
        counters.callback_attempts += 1
        try:
            async with provider.client().post(
                url, data=body, headers=headers, timeout=timeout
            ) as response:
                text = await response.text(errors="replace")
                if accept(response.status, text):
                    counters.callbacks_delivered += 1
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        counters.callback_failures += 1
    counters.callbacks_abandoned += 1
