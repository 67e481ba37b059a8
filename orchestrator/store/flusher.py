"""Shared commits (issue 18): concurrent writes of one kind go to Postgres as one statement.

A commit costs a WAL flush and a round trip whatever it carries, so 64 enqueues in flight
need not cost 64 of them. There is no timer and no sleep: a caller's item waits only for
the flush already running, and the next flush takes everything that arrived meanwhile (at
most `max_group`). A lone request is a group of one, run by the statement it always used.

Each caller gets its own answer, exactly as the unbatched call would have given it, and only
once the group's transaction has committed. If the group's statement raises (one bad item, a
deadlock with another instance's group), nothing of it was committed: each item is then run
alone, so one bad item fails alone. A database that cannot be reached is the exception: every
caller of the group gets that same error (a 503) at once, rather than each waiting out its own
timeout in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from orchestrator import errors

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: The most items one statement carries: enough for any burst one process sees, small
#: enough that a group's statement stays well under a second.
MAX_GROUP = 256


def no_report(kind: str, size: int, fell_back: bool) -> None:
    pass


class Flusher(Generic[T, R]):
    """Groups the items submitted while a flush is running into the next flush.

    `run_group` carries out several items in one statement (one transaction) and returns, in
    their order, each one's result or the exception its caller is to get; `run_one` is the
    unbatched call, used for a group of one and for each item when a group fails.
    `on_flush(kind, size, fell_back)` is told of every group (for the metrics).
    """

    def __init__(
        self,
        kind: str,
        run_group: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        run_one: Callable[[T], Awaitable[R]],
        *,
        max_group: int = MAX_GROUP,
        on_flush: Callable[[str, int, bool], None] = no_report,
    ) -> None:
        self.kind = kind
        self.run_group = run_group
        self.run_one = run_one
        self.max_group = max_group
        self.on_flush = on_flush
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Items waiting for the next flush (not those of the flush running now)."""
        return len(self._pending)

    async def submit(self, item: T) -> R:
        """The item's result once its group has committed (or its error)."""
        if self._closed:
            raise errors.DatabaseUnavailable(
                "the service is stopping; nothing more is written", error="Stopping"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = loop.create_task(self._run(), name=f"flusher-{self.kind}")
        return await future

    async def close(self, timeout_s: float) -> None:
        """Refuse new items, let what is pending be written within the timeout, then fail
        what is left with DatabaseUnavailable (the caller answers 503, and may retry)."""
        self._closed = True
        task = self._task
        if task is None:
            return
        _, late = await asyncio.wait([task], timeout=timeout_s)
        for running in late:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    async def _run(self) -> None:
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                taken = self._pending[: self.max_group]
                del self._pending[: self.max_group]
                # A caller that gave up (its request was cancelled) before its group formed
                # is not written; once the group is running, it is, as a direct call would be.
                group = [(item, future) for item, future in taken if not future.done()]
                if group:
                    await self._flush(group)
                group = []
        except BaseException as exc:
            # Stopped (cancelled at shutdown), or a bug: no caller is left waiting for ever.
            failed: BaseException = exc
            if isinstance(exc, asyncio.CancelledError):
                failed = errors.DatabaseUnavailable(
                    "the service stopped before this was written", error="Stopping"
                )
            for _, future in group + self._pending:
                if not future.done():
                    future.set_exception(failed)
            self._pending.clear()
            raise
        finally:
            self._task = None

    async def _flush(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in group]
        results: Sequence[R | Exception]
        fell_back = False
        if len(items) == 1:
            results = [await self._alone(items[0])]
        else:
            try:
                results = await self.run_group(items)
            except errors.DatabaseUnavailable as exc:
                # No connection, or it was lost: trying each item alone would make each wait
                # out the same timeout in turn. What the group wrote, if anything, is what a
                # direct call cut off at that moment would have written.
                results = [exc] * len(items)
            except Exception as exc:  # one bad item, or a deadlock: nothing was committed
                log.info(
                    "%s group of %d failed (%s: %s); each item is tried alone",
                    self.kind,
                    len(items),
                    type(exc).__name__,
                    exc,
                )
                fell_back = True
                results = [await self._alone(item) for item in items]
        self.on_flush(self.kind, len(items), fell_back)
        for (_, future), result in zip(group, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _alone(self, item: T) -> R | Exception:
        try:
            return await self.run_one(item)
        except Exception as exc:
            return exc
