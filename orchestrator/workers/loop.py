"""The supervised loop the dispatcher and the sweeper share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from orchestrator import errors

log = logging.getLogger(__name__)


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def run_every(
    name: str,
    step: Callable[[], Awaitable[object]],
    interval_s: float,
    stopping: asyncio.Event,
) -> None:
    """Run `step` every interval until stopped. A lost database is waited out, not fatal;
    anything else propagates, so the supervisor sees the task die and stops the process."""
    while not stopping.is_set():
        try:
            await step()
        except errors.DatabaseUnavailable as exc:
            log.warning("%s: %s; retrying in %.1fs", name, exc.detail, interval_s)
        await sleep_or_stop(stopping, interval_s)


def supervise(task: asyncio.Task[None], on_crash: Callable[[BaseException], None]) -> None:
    """Report a background task that ends by an exception, so the process can stop cleanly."""

    def done(finished: asyncio.Task[None]) -> None:
        if finished.cancelled():
            return
        exc = finished.exception()
        if exc is not None:
            log.critical("background task %s died", finished.get_name(), exc_info=exc)
            on_crash(exc)

    task.add_done_callback(done)
