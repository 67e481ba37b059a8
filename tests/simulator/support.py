"""What the simulator tests share: credentials, a callback receiver, and how to call each
provider's cancel.

The simulators are what the orchestrator's tests trust to behave like Dropbox Sign, Truto
and Aptly, so the tests beside this module pin the wire behaviour the orchestrator depends
on: shapes, status codes, headers, callback signing and retries, and each fault.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from orchestrator.simulator import ACK_TEXT, SimulatorServer

WAIT_S = 2.0
DS_KEY = "test-key"


def basic(key: str) -> dict[str, str]:
    """aiohttp 3.14 deprecates BasicAuth (warnings are errors here), so build the header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


DS_AUTH = basic(DS_KEY)
TRUTO = {"Authorization": "Bearer sim-truto-token"}
APTLY = {"Authorization": "Bearer sim-aptly-token"}
TRUTO_WORKFLOWS = "/unified/e-signature/workflows"


@dataclasses.dataclass
class Received:
    content_type: str
    headers: dict[str, str]
    raw: bytes
    payload: dict[str, Any]
    form_fields: list[str]


class Receiver:
    """A callback endpoint on loopback; answers from ``answers`` first, then acknowledges."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = []
        self.received: list[Received] = []
        self._arrived = asyncio.Condition()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        fields: list[str] = []
        if request.content_type == "multipart/form-data":
            form = await request.post()
            fields = list(form.keys())
            text = str(form["json"])
            raw = text.encode()
        else:
            raw = await request.read()
            text = raw.decode()
        async with self._arrived:
            self.received.append(
                Received(request.content_type, dict(request.headers), raw, json.loads(text), fields)
            )
            self._arrived.notify_all()
        status, body = self.answers.pop(0) if self.answers else (200, ACK_TEXT)
        return web.Response(status=status, text=body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/callback"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int) -> list[Received]:
        async with asyncio.timeout(WAIT_S), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received


async def eventually(check: Callable[[], bool]) -> None:
    """Poll simulator state that no task or event signals (a handler finishing)."""
    for _ in range(int(WAIT_S / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition did not become true in time")


Call = Callable[..., Awaitable[tuple[int, Any, Any]]]


def cancel_call(server: SimulatorServer, provider: str, request_id: str) -> dict[str, Any]:
    """The keyword arguments of one cancel call of ``provider``, for ``http.request``."""
    base = {"dropbox_sign": server.dropbox_sign_url, "truto": server.truto_url}
    if provider == "dropbox_sign":
        url = f"{base[provider]}/signature_request/cancel/{request_id}"
        return {"method": "POST", "url": url, "headers": DS_AUTH}
    if provider == "truto":
        url = f"{base[provider]}{TRUTO_WORKFLOWS}/cancel?integrated_account_id=ia"
        body = {"id": request_id, "message": "m"}
        return {"method": "POST", "url": url, "headers": TRUTO, "json": body}
    url = f"{server.aptly_url}/v1/actions/{request_id}/cancel-action"
    return {"method": "PATCH", "url": url, "headers": APTLY, "json": {}}
