"""What the three provider stand-ins share.

Every API call goes through ``ProviderSimulator.serve``: authentication, the call log, the
rate limit and the injected faults happen there in one fixed order, so each provider module
only says what its API answers when nothing goes wrong. Background work (queued cancels,
callback deliveries) runs in named tasks the simulator keeps and cancels on close.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import dataclasses
import math
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from orchestrator.simulator import faults as faults_mod
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.records import (
    SEEDABLE_STATES,
    STATES,
    Call,
    CallKind,
    Counters,
    LimitWindow,
    RequestRecord,
)


@dataclasses.dataclass
class CommonSettings:
    """``rate_limit_per_min`` calls are allowed per account in any ``rate_limit_window_s``
    (60 s like the real APIs; tests shorten it)."""

    rate_limit_per_min: int | None = None
    rate_limit_window_s: float = 60.0


Logic = Callable[[str], Awaitable[web.StreamResponse]]


class ProviderSimulator(abc.ABC):
    name: ClassVar[str]
    #: The header a 429 carries the reset in, which ``raw_ratelimit_reset`` replaces.
    reset_header: ClassVar[str | None] = None
    settings: CommonSettings

    def __init__(self, settings: CommonSettings, faults: Faults | None) -> None:
        self.settings = settings
        self.faults = dataclasses.replace(faults) if faults is not None else Faults()
        self.faults.bind(self.name)
        self.counters = Counters()
        self.records: dict[str, RequestRecord] = {}
        self.calls: list[Call] = []
        self.limit_windows: list[LimitWindow] = []
        self.events: list[dict[str, Any]] = []
        self.responses: collections.Counter[int] = collections.Counter()
        self._accepted: dict[str | None, collections.deque[float]] = {}
        self._limited_until: dict[str | None, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # --- what each provider supplies -------------------------------------------------

    @abc.abstractmethod
    def make_app(self) -> web.Application:
        """The provider's routes, mounted by the combined app under ``/<name>``."""

    @abc.abstractmethod
    def authenticate(self, request: web.Request) -> str | None:
        """The account the call is made for, or None when the credentials are wrong."""

    @abc.abstractmethod
    def unauthorized_response(self) -> web.Response: ...

    @abc.abstractmethod
    def rate_limited_response(self, now: float, until: float, limit: int) -> web.Response: ...

    @abc.abstractmethod
    def server_error_response(self, status: int) -> web.Response: ...

    def announced_until(self, now: float, until: float) -> float:
        """Headers carry whole seconds to wait; the simulator holds callers to what it said."""
        return now + math.ceil(until - now)

    # --- requests ---------------------------------------------------------------------

    def record(self, request_id: str) -> RequestRecord:
        """Unknown ids are open requests created on first sight, which keeps tests short."""
        rec = self.records.get(request_id)
        if rec is None:
            rec = self.records[request_id] = RequestRecord(self.name, request_id)
        return rec

    def seed(self, request_id: str, state: str) -> RequestRecord:
        if state not in SEEDABLE_STATES:
            raise faults_mod.ConfigError(
                f"state must be one of {sorted(SEEDABLE_STATES)}, got {state!r}"
            )
        rec = self.record(request_id)
        rec.state = state
        if state == "canceled" and rec.canceled_at is None:
            rec.canceled_at = time.time()
        return rec

    def state_of(self, request_id: str) -> str | None:
        rec = self.records.get(request_id)
        return None if rec is None else rec.state

    def request_info(self, request_id: str) -> dict[str, Any] | None:
        rec = self.records.get(request_id)
        return None if rec is None else rec.to_dict()

    def cancel_call_times(self, account: str | None = None) -> list[float]:
        return [c.at for c in self.calls if c.kind == "cancel" and c.account == account]

    def call_times(self, account: str | None = None) -> list[float]:
        return [c.at for c in self.calls if c.account == account]

    def stats(self) -> dict[str, Any]:
        states = dict.fromkeys(STATES, 0)
        for rec in self.records.values():
            states[rec.state] += 1
        out: dict[str, Any] = dataclasses.asdict(self.counters)
        out["responses"] = {str(code): n for code, n in sorted(self.responses.items())}
        out["states"] = states
        return out

    # --- configuration ----------------------------------------------------------------

    def check(self, changes: Mapping[str, Any]) -> None:
        """Raise ConfigError if ``configure(changes)`` would fail; apply nothing."""
        self._split(changes)

    def knows(self, name: str) -> bool:
        return name in faults_mod.field_names(Faults) or name in faults_mod.field_names(
            type(self.settings)
        )

    def configure(self, changes: Mapping[str, Any]) -> None:
        fault_changes, setting_changes = self._split(changes)
        self.faults.update(fault_changes)
        for name, value in setting_changes.items():
            setattr(self.settings, name, value)

    def config(self) -> dict[str, Any]:
        settings = {
            n: getattr(self.settings, n) for n in faults_mod.field_names(type(self.settings))
        }
        return {**dict(sorted(settings.items())), **self.faults.as_dict()}

    def _split(self, changes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        fault_names = faults_mod.field_names(Faults)
        faults = faults_mod.check_changes(
            self.faults, {k: v for k, v in changes.items() if k in fault_names}
        )
        settings = faults_mod.check_changes(
            self.settings, {k: v for k, v in changes.items() if k not in fault_names}
        )
        return faults, settings

    # --- lifecycle --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests, calls and counters; keep settings and faults (reseeded)."""
        for task in self._tasks:
            task.cancel()
        self.counters = Counters()
        self.records.clear()
        self.calls.clear()
        self.limit_windows.clear()
        self.events.clear()
        self.responses.clear()
        self._accepted.clear()
        self._limited_until.clear()
        self.faults.reseed()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"sim-{self.name}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait until queued cancels and callback deliveries are done, so tests need not
        sleep; bound it with ``asyncio.timeout``."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    # --- the pipeline every API call goes through -------------------------------------

    async def serve(
        self, request: web.Request, kind: CallKind, request_id: str | None, logic: Logic
    ) -> web.StreamResponse:
        """Run one call through the faults in this order: auth, slow, reset, redirect, rate
        limit, 5xx (any call, then status calls only), the provider's logic, and last the
        reset or 5xx that replaces the answer to a cancel that landed."""
        now = time.time()
        if kind == "cancel":
            self.counters.cancel_calls += 1
        else:
            self.counters.status_calls += 1
        account = self.authenticate(request)
        if account is None:
            self.counters.unauthorized += 1
            return self._finish(now, None, kind, request_id, self.unauthorized_response())
        if request_id is not None:
            rec = self.record(request_id)
            rec.account = rec.account or account
            if kind == "cancel":
                rec.cancel_calls += 1
            else:
                rec.status_calls += 1
        if now < self._limited_until.get(account, 0.0):
            self.counters.calls_before_reset += 1
        if self.faults.chance("slow_rate"):
            self.counters.injected_slow += 1
            await asyncio.sleep(self.faults.slow_s)
        if self.faults.chance("reset_rate"):
            self.counters.injected_resets += 1
            return self._drop(request, now, account, kind, request_id)
        if self.faults.chance("redirect_rate"):
            self.counters.injected_redirects += 1
            response: web.StreamResponse | None = self._redirect(request)
        else:
            response = self._limit(now, account)
        if response is None and self.faults.chance("error_5xx_rate"):
            self.counters.injected_5xx += 1
            response = self.server_error_response(self.faults.rng.choice((500, 502, 503)))
        if response is None and kind == "status" and self.faults.chance("status_5xx_rate"):
            self.counters.injected_status_5xx += 1
            response = self.server_error_response(self.faults.rng.choice((500, 502, 503)))
        if response is None:
            response = await logic(account)
            if kind == "cancel" and self.faults.chance("reset_after_cancel_rate"):
                self.counters.resets_after_cancel += 1
                return self._drop(request, now, account, kind, request_id)
            if kind == "cancel" and self.faults.chance("error_5xx_after_cancel_rate"):
                self.counters.errors_after_cancel += 1
                response = self.server_error_response(self.faults.rng.choice((500, 502, 503)))
        return self._finish(now, account, kind, request_id, response)

    def _drop(
        self,
        request: web.Request,
        now: float,
        account: str | None,
        kind: CallKind,
        request_id: str | None,
    ) -> web.StreamResponse:
        self.calls.append(Call(now, account, kind, request_id, 0))
        _drop_connection(request)
        return web.Response()

    def _redirect(self, request: web.Request) -> web.Response:
        """Send the caller to ``/_sim/redirected/<provider>``, which answers anything 200."""
        location = request.url.with_path(f"/_sim/redirected/{self.name}").with_query(None)
        return web.Response(status=self.faults.redirect_status, headers={"Location": str(location)})

    def _limit(self, now: float, account: str) -> web.Response | None:
        limit = self.settings.rate_limit_per_min
        until: float | None = None
        if limit is not None:
            window = self.settings.rate_limit_window_s
            accepted = self._accepted.setdefault(account, collections.deque())
            while accepted and accepted[0] <= now - window:
                accepted.popleft()
            if len(accepted) >= limit:
                until = accepted[0] + window
        if until is None and self.faults.chance("rate_429"):
            until = now + self.faults.retry_after_s
        if until is None:
            if limit is not None:
                self._accepted[account].append(now)
            return None
        until = self.announced_until(now, until)
        self.counters.rate_limited += 1
        self._limited_until[account] = max(self._limited_until.get(account, 0.0), until)
        self.limit_windows.append(LimitWindow(account, now, until))
        response = self.rate_limited_response(now, until, limit if limit is not None else 100)
        if self.faults.raw_retry_after is not None:
            response.headers["Retry-After"] = self.faults.raw_retry_after
        if self.faults.raw_ratelimit_reset is not None and self.reset_header is not None:
            response.headers[self.reset_header] = self.faults.raw_ratelimit_reset
        return response

    def _finish(
        self,
        now: float,
        account: str | None,
        kind: CallKind,
        request_id: str | None,
        response: web.StreamResponse,
    ) -> web.StreamResponse:
        self.calls.append(Call(now, account, kind, request_id, response.status))
        self.responses[response.status] += 1
        return response


def _drop_connection(request: web.Request) -> None:
    """Close the socket with SO_LINGER 0 so the client sees a reset, not an answer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
