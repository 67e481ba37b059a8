"""Callbacks reach only where the operator said (ORCH_CALLBACK_HOSTS), over real HTTP on
loopback. Names that would lead elsewhere resolve through a stub resolver, and every connect
the event loop makes is recorded (and one beyond loopback refused): each probe asserts that
no connection was attempted, so no test sends anything beyond 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from orchestrator.domain.destinations import CallbackHosts, Verdict
from orchestrator.workers.callback_net import CallbackClient, RefusedAddress, error_class
from orchestrator.workers.callbacks import CallbackReport, CallbackSender
from tests.integration.conftest import Harness
from tests.integration.test_callbacks import (
    SECRET,
    Receiver,
    abandon,
    callback_rows,
    listing,
    receiver,  # noqa: F401 - the fixture
    sender,
)


class StubResolver(AbstractResolver):
    """Names to addresses, as a DNS server under someone else's control might answer."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"stub: no such name {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.names[host]
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
async def connects(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Any]]:
    """Every address the event loop is asked to connect to; beyond loopback, refused."""
    loop = asyncio.get_running_loop()
    real = loop.sock_connect
    seen: list[Any] = []

    async def recorded(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # not Postgres's unix socket
            seen.append(address)
            if not ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback:
                raise ConnectionRefusedError("test: nothing beyond loopback")
        await real(sock, address)

    monkeypatch.setattr(loop, "sock_connect", recorded)
    yield seen


@pytest.fixture
def settings_overrides(receiver: Receiver) -> dict[str, Any]:  # noqa: F811
    """`*` and the loopback receiver listed: the operator's usual set-up with public
    receivers and one internal service."""
    return {
        "callback_secret": SECRET,
        "callback_hosts": listing(receiver, "*"),
        "callback_retry_for_s": 3600,
    }


def probe_sender(harness: Harness, hosts: CallbackHosts, names: StubResolver) -> CallbackSender:
    live = sender(harness)
    client = CallbackClient(hosts, timeout_s=2, resolver=names)
    return CallbackSender(live.outbox, client, SECRET, live.render, live.policy, harness.clock)


async def ended_with_callback(harness: Harness, resource: str, url: str) -> str:
    created = await harness.enqueue(resource, callback_url=url)
    await abandon(harness, created["id"])
    return str(created["id"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/x",
        "http://localhost/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::1]:6379/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/x",
        "http://2130706433/x",
    ],
)
async def test_an_internal_address_under_star_is_a_422_naming_callback_url(
    harness: Harness, url: str
) -> None:
    problem = await harness.enqueue("sr-ssrf-enqueue", expect=422, callback_url=url)
    (error,) = problem["errors"]
    assert error == {"field": "callback_url", "message": "the address is not public"}


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("internal.example", ["10.0.0.5"]),
        ("metadata.example", ["169.254.169.254"]),
        ("rebound.example", ["127.0.0.1"]),  # public at enqueue, loopback at delivery
        ("mapped.example", ["::ffff:127.0.0.1"]),
        ("mixed.example", ["93.184.215.14", "10.0.0.5"]),  # all must be public
    ],
)
async def test_a_name_resolving_inside_is_refused_at_delivery_without_a_connect(
    harness: Harness,
    receiver: Receiver,  # noqa: F811
    connects: list[Any],
    name: str,
    addresses: list[str],
) -> None:
    url = f"http://{name}:{receiver.server.port}/hook"  # the receiver's port, on loopback
    ident = await ended_with_callback(harness, f"sr-ssrf-{name}", url)
    names = StubResolver({name: addresses})
    probe = probe_sender(harness, CallbackHosts.parse(["*"]), names)
    connects.clear()  # the test client's own requests to the service so far
    try:
        assert await probe.run_once() == CallbackReport(retrying=1)
    finally:
        await probe.http.close()
    assert names.asked == [name]
    assert connects == []
    assert receiver.received == []
    (row,) = callback_rows(await harness.events(ident))
    assert row[2] == "callback_failed"
    evidence = (await harness.events(ident))[-1]["evidence"]
    assert evidence["error"] == "refused_address"
    assert not any(address in str(evidence) for address in addresses)


async def test_an_ip_literal_skips_the_resolver_and_is_still_refused(
    receiver: Receiver,  # noqa: F811
    connects: list[Any],
) -> None:
    """aiohttp's TCPConnector returns an IP literal without asking the resolver: the
    socket factory refuses it on the address itself, even if the list's own check of the
    URL were bypassed."""
    names = StubResolver({})
    client = CallbackClient(CallbackHosts.parse(["*"]), timeout_s=2, resolver=names)
    try:
        public = client.session_for(Verdict.PUBLIC_ONLY)
        for url in (receiver.url(), f"http://[::ffff:127.0.0.1]:{receiver.server.port}/hook"):
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await public.post(url, data=b"{}")
            assert error_class(caught.value) == "refused_address"
            assert isinstance(caught.value.os_error, RefusedAddress)
    finally:
        await client.close()
    assert names.asked == []
    assert connects == []
    assert receiver.received == []


async def test_a_listed_internal_receiver_is_called(
    harness: Harness,
    receiver: Receiver,  # noqa: F811
) -> None:
    """127.0.0.1:PORT is on the list: the operator's choice, called though it is loopback."""
    ident = await ended_with_callback(harness, "sr-ssrf-listed", receiver.url())
    assert await sender(harness).run_once() == CallbackReport(delivered=1)
    (got,) = receiver.received
    assert got.valid and got.json["id"] == ident


async def test_a_listed_name_is_called_though_it_resolves_to_an_internal_address(
    harness: Harness,
    receiver: Receiver,  # noqa: F811
) -> None:
    """The operator listed receiver.internal:PORT; it resolves to loopback and is called."""
    port = receiver.server.port
    ident = await ended_with_callback(
        harness, "sr-ssrf-listed-name", f"http://receiver.internal:{port}/hook"
    )
    names = StubResolver({"receiver.internal": ["127.0.0.1"]})
    probe = probe_sender(harness, CallbackHosts.parse([f"receiver.internal:{port}"]), names)
    try:
        assert await probe.run_once() == CallbackReport(delivered=1)
    finally:
        await probe.http.close()
    assert names.asked == ["receiver.internal"]
    (got,) = receiver.received
    assert got.valid and got.json["id"] == ident


async def test_a_listed_host_on_another_port_is_refused(
    harness: Harness,
    receiver: Receiver,  # noqa: F811
) -> None:
    problem = await harness.enqueue(
        "sr-ssrf-port",
        expect=422,
        callback_url=f"http://127.0.0.1:{receiver.server.port + 1}/hook",
    )
    assert problem["errors"][0]["field"] == "callback_url"


async def test_a_stored_url_whose_host_left_the_list_is_not_called(
    harness: Harness,
    receiver: Receiver,  # noqa: F811
    connects: list[Any],
) -> None:
    """The operator removed the receiver from ORCH_CALLBACK_HOSTS after the enqueue: the
    delivery is given up at once, and the history says why."""
    ident = await ended_with_callback(harness, "sr-ssrf-removed", receiver.url())
    now_listed = CallbackHosts.parse(["hooks.example", "*"])
    probe = probe_sender(harness, now_listed, StubResolver({}))
    connects.clear()
    try:
        assert await probe.run_once() == CallbackReport(gave_up=1)
        assert await probe.run_once() == CallbackReport()
    finally:
        await probe.http.close()
    assert receiver.received == []
    assert connects == []
    events = await harness.events(ident)
    assert [c for _, _, c in callback_rows(events)] == ["callback_gave_up"]
    evidence = events[-1]["evidence"]
    assert evidence["error"] == "callback_refused"
    assert evidence["reason"] == "the address is not public"

    # With no `*` at all, the reason names the list.
    ident = await ended_with_callback(harness, "sr-ssrf-removed-2", receiver.url())
    probe = probe_sender(harness, CallbackHosts.parse(["hooks.example"]), StubResolver({}))
    try:
        assert await probe.run_once() == CallbackReport(gave_up=1)
    finally:
        await probe.http.close()
    evidence = (await harness.events(ident))[-1]["evidence"]
    assert evidence["error"] == "callback_refused"
    assert "not an allowed callback host" in evidence["reason"]
    assert receiver.received == []


async def test_the_description_does_not_publish_the_host_list(
    harness: Harness,
    receiver: Receiver,  # noqa: F811
) -> None:
    text = await (await harness.client.get("/openapi.json")).text()
    assert str(receiver.server.port) not in text
    assert "ORCH_CALLBACK_HOSTS" in text  # it says a list exists, not what is on it


async def test_an_attempt_is_recorded_as_a_class_never_as_an_error_text() -> None:
    """What reaches the history names no address or port: a closed port, a TLS handshake
    with a plain HTTP server, a receiver too slow to answer."""
    app = web.Application()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app.router.add_post("/slow", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    closed_port = closed.getsockname()[1]
    hosts = CallbackHosts.parse([f"127.0.0.1:{server.port}", f"127.0.0.1:{closed_port}"])
    client = CallbackClient(hosts, timeout_s=0.3)
    try:
        answers = {
            "closed": await client.post(f"http://127.0.0.1:{closed_port}/x", b"{}", {}),
            "tls": await client.post(f"https://127.0.0.1:{server.port}/slow", b"{}", {}),
            "slow": await client.post(f"http://127.0.0.1:{server.port}/slow", b"{}", {}),
        }
    finally:
        await client.close()
        await server.close()
        closed.close()
    assert {k: (a.status, a.error) for k, a in answers.items()} == {
        "closed": (None, "connect_failed"),
        "tls": (None, "tls"),
        "slow": (None, "timeout"),
    }
    assert all(a.reason is None for a in answers.values())
