"""The load generator: N prepared POSTs at a fixed number in flight, each one timed.

Bodies are built before the clock starts, so what is measured is the server (and the
loopback), not the client building JSON or multipart bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from harness import percentile

Request = tuple[str, bytes, dict[str, str]]  # path, body, headers


@dataclass
class LoadResult:
    count: int
    seconds: float
    latencies_s: list[float] = field(repr=False)
    statuses: Counter[int]
    first_sent_at: float  # time.time() of the first request
    errors: int = 0

    def summary(self) -> dict[str, Any]:
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return {
            "count": self.count,
            "ok": ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "seconds": round(self.seconds, 3),
            "per_s": round(self.count / self.seconds, 1) if self.seconds else None,
            "p50_ms": round(percentile(self.latencies_s, 0.50) * 1000, 2),
            "p99_ms": round(percentile(self.latencies_s, 0.99) * 1000, 2),
            "max_ms": round(max(self.latencies_s, default=float("nan")) * 1000, 2),
        }


async def post_all(
    base_url: str, requests: Sequence[Request], concurrency: int, timeout_s: float
) -> LoadResult:
    """POST every request with `concurrency` workers; bounded by `timeout_s` overall."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=30)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal next_index, errors
        while next_index < len(requests):
            path, body, headers = requests[next_index]
            next_index += 1
            started = time.perf_counter()
            try:
                async with http.post(base_url + path, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as http:
        first_sent_at = time.time()
        started = time.perf_counter()
        workers = [asyncio.create_task(worker(http)) for _ in range(concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), timeout_s)
        except TimeoutError:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        seconds = time.perf_counter() - started
    return LoadResult(len(latencies), seconds, latencies, statuses, first_sent_at, errors)


# --- what is sent ---------------------------------------------------------------------


def resource_ids(prefix: str, count: int) -> list[str]:
    """Dropbox Sign signature request ids look like 40 hex characters."""
    return [hashlib.sha1(f"{prefix}-{n}".encode()).hexdigest() for n in range(count)]


def enqueue_requests(ids: Sequence[str]) -> list[Request]:
    headers = {"Content-Type": "application/json"}
    return [
        (
            "/v1/cancellations",
            orjson.dumps(
                {"provider": "dropbox_sign", "resource_id": rid, "reason": "bench: offboarding"}
            ),
            headers,
        )
        for rid in ids
    ]


def batch_requests(ids: Sequence[str], size: int) -> list[Request]:
    """POST /v1/cancellations/batch bodies of `size` items each (the last may be smaller)."""
    headers = {"Content-Type": "application/json"}
    item = {"provider": "dropbox_sign", "reason": "bench: offboarding"}
    return [
        (
            "/v1/cancellations/batch",
            orjson.dumps({"items": [{**item, "resource_id": rid} for rid in ids[i : i + size]]}),
            headers,
        )
        for i in range(0, len(ids), size)
    ]


def event_hash(api_key: str, event_time: str, event_type: str) -> str:
    return hmac.new(
        api_key.encode(), (event_time + event_type).encode(), hashlib.sha256
    ).hexdigest()


def callback_requests(
    ids: Sequence[str], api_key: str, account_id: str, path: str
) -> list[Request]:
    """Signed `signature_request_canceled` callbacks, built the way the simulator does:
    multipart/form-data with one `json` field."""
    out: list[Request] = []
    event_type = "signature_request_canceled"
    now = int(time.time())
    for rid in ids:
        event_time = str(now)
        event = {
            "event": {
                "event_type": event_type,
                "event_time": event_time,
                "event_hash": event_hash(api_key, event_time, event_type),
                "event_metadata": {
                    "related_signature_id": None,
                    "reported_for_account_id": account_id,
                    "reported_for_app_id": None,
                    "event_message": None,
                },
            },
            "signature_request": {
                "signature_request_id": rid,
                "title": f"Simulated request {rid}",
                "is_complete": False,
                "is_declined": False,
                "has_error": False,
                "created_at": now - 3600,
                "expires_at": None,
                "signatures": [
                    {
                        "signature_id": hashlib.sha256(rid.encode()).hexdigest()[:32],
                        "signer_email_address": "signer@example.com",
                        "signer_name": "Simulated Signer",
                        "status_code": "awaiting_signature",
                    }
                ],
            },
        }
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="json"\r\n\r\n'
            f"{orjson.dumps(event).decode()}\r\n"
            f"--{boundary}--\r\n"
        ).encode()
        out.append((path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    return out
