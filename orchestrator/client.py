"""A small HTTP client of the orchestrator's API, for the command line and for scripts.

It knows the routes and the problem+json errors, nothing of the service's insides: it reads
only where the service is (ORCH_URL) and the bearer token (ORCH_TOKEN).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import orjson

from orchestrator.config import ClientSettings
from orchestrator.domain.model import Status

#: The longest the service lets a status request wait (service.inputs.MAX_WAIT_S).
MAX_WAIT_S = 60


class ApiError(Exception):
    """The service answered with a problem, or could not be reached (status 0)."""

    def __init__(self, status: int, detail: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem = problem or {}

    def lines(self) -> list[str]:
        """The detail, then each field at fault."""
        fields = self.problem.get("errors") or []
        return [self.detail] + [f"  {e.get('field')}: {e.get('message')}" for e in fields]


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    etag: str | None


class Client:
    def __init__(self, settings: ClientSettings, *, timeout_s: float = 30) -> None:
        self.base = settings.url
        self.headers = {"Accept": "application/json"}
        if settings.token is not None:
            self.headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self.timeout_s = timeout_s
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(headers=self.headers)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Answer:
        assert self._http is not None, "use the client as `async with Client(...)`"
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            async with self._http.request(
                method,
                self.base + path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout,
            ) as response:
                raw = await response.read()
                etag = response.headers.get("ETag")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"cannot reach {self.base}: {exc or type(exc).__name__}") from None
        if status == 304:
            return Answer(status, None, etag)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if status >= 400:
            problem = body if isinstance(body, dict) else {}
            detail = problem.get("detail") or f"HTTP {status}: {raw[:200].decode(errors='replace')}"
            raise ApiError(status, str(detail), problem)
        return Answer(status, body, etag)

    # --- the API ----------------------------------------------------------------------------

    async def enqueue(self, body: dict[str, Any], idempotency_key: str | None = None) -> Answer:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("POST", "/v1/cancellations", json=body, headers=headers)

    async def enqueue_batch(self, items: list[dict[str, Any]]) -> Answer:
        return await self._call("POST", "/v1/cancellations/batch", json={"items": items})

    async def get(
        self, cancellation_id: uuid.UUID, *, etag: str | None = None, wait_s: float = 0
    ) -> Answer:
        """The cancellation; with `wait_s`, once it differs from `etag` (304: it did not)."""
        params = {"wait": str(wait_s)} if wait_s else None
        headers = {"If-None-Match": etag} if etag else None
        return await self._call(
            "GET",
            f"/v1/cancellations/{cancellation_id}",
            params=params,
            headers=headers,
            timeout_s=self.timeout_s + wait_s,
        )

    async def follow(
        self, cancellation_id: uuid.UUID, wait_s: float = MAX_WAIT_S
    ) -> AsyncIterator[dict[str, Any]]:
        """Each state of the cancellation, from now until it ends: one long poll per change
        (or per `wait_s` without one), never a tight loop."""
        answer = await self.get(cancellation_id)
        yield answer.body
        etag = answer.etag
        while not Status(answer.body["status"]).is_terminal:
            answer = await self.get(cancellation_id, etag=etag, wait_s=wait_s)
            if answer.status == 304:
                continue
            etag = answer.etag
            yield answer.body

    async def list(self, query: dict[str, str]) -> Answer:
        return await self._call("GET", "/v1/cancellations", params=query)

    async def retry(self, cancellation_id: uuid.UUID, reason: str) -> Answer:
        return await self._call(
            "POST", f"/v1/cancellations/{cancellation_id}/retry", json={"reason": reason}
        )
