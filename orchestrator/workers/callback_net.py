"""The callback sender's own HTTP client: it reaches only where ORCH_CALLBACK_HOSTS says.

Two sessions, never the providers' one:

* `listed`: for a host:port on the operator's list, called as is, internal or not.
* `public`: for a host admitted only by `*`. Its resolver refuses a name unless every address
  it resolves to is public, and its socket factory refuses to open a socket to any address
  that is not public. The check is on the addresses actually connected to, at each delivery:
  DNS rebinding (public at enqueue, 10.x at delivery) gains nothing. The socket factory also
  covers what skips the resolver: aiohttp's TCPConnector._resolve_host returns an IP literal
  as is, without asking the resolver.

Outcomes are classes (connect_failed, timeout, tls, refused_address, ...), never the text of
a connect error: that names addresses and ports, and the history is readable by any `read`
token, which would make the service a port scanner.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp
import yarl
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from orchestrator.domain import callbacks
from orchestrator.domain.destinations import (
    CallbackHosts,
    Verdict,
    is_public,
    literal,
    normal_host,
)

log = logging.getLogger(__name__)


class RefusedAddress(OSError):
    """A callback host resolved to (or is) an address that is not public, under `*`."""


def _refuse_unless_public(address: str) -> None:
    parsed = literal(address)
    if parsed is None or not is_public(parsed):
        raise RefusedAddress("callback refused: the address is not public")


class PublicOnlyResolver(AbstractResolver):
    """Wraps a resolver; a name any of whose addresses is not public is refused whole."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for result in results:
            _refuse_unless_public(result["host"])
        return results

    async def close(self) -> None:
        await self.inner.close()


def public_socket(addr_info: AddrInfoType) -> socket.socket:
    """The last gate, on the address a socket is about to connect to."""
    family, type_, proto, _, address = addr_info
    _refuse_unless_public(str(address[0]))
    return socket.socket(family=family, type=type_, proto=proto)


class CallbackClient:
    """POSTs one callback where the list allows, and says how it went as a class."""

    def __init__(
        self,
        hosts: CallbackHosts,
        *,
        timeout_s: float = 5.0,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.hosts = hosts
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._resolver = resolver
        self._listed: aiohttp.ClientSession | None = None
        self._public: aiohttp.ClientSession | None = None

    def session_for(self, verdict: Verdict) -> aiohttp.ClientSession:
        """The session for a host the list admits so: made on first use, inside the running
        loop (aiohttp binds a session to it)."""
        if self._listed is None or self._public is None:
            self._listed = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=self._resolver), trust_env=False
            )
            self._public = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=PublicOnlyResolver(self._resolver),
                    socket_factory=public_socket,
                ),
                trust_env=False,
            )
        return self._listed if verdict is Verdict.LISTED else self._public

    async def close(self) -> None:
        for session in (self._listed, self._public):
            if session is not None:
                await session.close()
        self._listed = self._public = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> callbacks.Answer:
        decision = self.hosts.decide(url)
        if decision.verdict is Verdict.REFUSED:
            return callbacks.Answer(error="callback_refused", reason=decision.reason, final=True)
        target = yarl.URL(url)
        if (normal_host(target.host or ""), target.port) != (decision.host, decision.port):
            return callbacks.Answer(
                error="callback_refused",
                reason="the URL names a different host to the HTTP client",
                final=True,
            )
        session = self.session_for(decision.verdict)
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=self.timeout
            ) as response:
                if 300 <= response.status < 400:
                    return callbacks.Answer(
                        response.status,
                        "redirect",
                        reason="redirect not followed: answer the callback URL itself",
                    )
                return callbacks.Answer(response.status)
        except TimeoutError:
            return callbacks.Answer(error="timeout")
        except aiohttp.ClientError as exc:
            # The text, for the operator's log only; the history gets the class.
            log.debug("callback POST failed: %s: %s", type(exc).__name__, exc)
            return callbacks.Answer(error=error_class(exc))
        except RefusedAddress:
            return callbacks.Answer(error="refused_address")


def error_class(exc: BaseException) -> str:
    """What went wrong, in a word that names no address or port."""
    cause: Any = exc
    for _ in range(4):  # the connector wraps the resolver's or the socket's error once or twice
        if cause is None:
            break
        if isinstance(cause, RefusedAddress):
            return "refused_address"
        cause = getattr(cause, "os_error", None) or cause.__cause__
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return "tls"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid_url"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "connect_failed"
    return "http_error"
