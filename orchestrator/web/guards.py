"""Who may see what outside /v1, and which Host names the service answers to.

Two small guards (issue 16): the Host check, against DNS rebinding (a page whose name
resolves to 127.0.0.1 would otherwise talk to a tokenless `make run`); and the reader of the
operational routes, so /metrics, /readyz's details and /openapi.json name no account and no
callback host to a caller without a token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from orchestrator import errors
from orchestrator.config import Settings, host_allowed
from orchestrator.web import auth

#: Probes answer whatever the Host: an orchestrator's liveness and readiness probes (Kubernetes
#: sends the pod's address) must not fail once ORCH_ALLOWED_HOSTS is set. They say only ok or
#: ready under a Host that is not listed (HOST_LISTED), so a rebound name learns nothing.
PROBES = frozenset({"/healthz", "/readyz"})
HOST_LISTED = web.RequestKey("host_listed", bool)


def host_check_middleware(allowed: frozenset[str] | None) -> Any:
    """421 for a request whose Host is not one of `allowed` (None: any). Webhooks too: the
    providers send the service's public name, which the operator lists."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        request[HOST_LISTED] = listed = host_allowed(host, allowed)
        if not listed and request.path not in PROBES:
            raise errors.MisdirectedRequest(
                f"this service does not answer to the host {host[:255]!r}"
                " (ORCH_ALLOWED_HOSTS lists the names it does)"
            )
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


@dataclass(frozen=True)
class OpsReaders:
    """Who may read /metrics, /readyz's details and the instance's own /openapi.json: a
    token with the `read` scope, or the scraper's ORCH_METRICS_TOKEN. With neither kind of
    token configured (a loopback `make run`), everyone, like the API itself."""

    tokens: tuple[auth.Token, ...]
    metrics_token: bytes | None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpsReaders:
        token = settings.metrics_token
        secret = token.get_secret_value().encode() if token else None
        return cls(tuple(auth.parse_tokens(settings)), secret)

    @property
    def open(self) -> bool:
        return not self.tokens and self.metrics_token is None

    def check(self, request: web.Request) -> None:
        """Raise Unauthorized (no or unknown token) or Forbidden (no `read` scope)."""
        if self.open:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            raise errors.Unauthorized(
                "send Authorization: Bearer <token> (the read scope, or ORCH_METRICS_TOKEN)"
            )
        is_scraper = self.metrics_token is not None and hmac.compare_digest(
            self.metrics_token, presented
        )
        found = auth.authenticate(list(self.tokens), presented.decode(errors="replace"))
        if is_scraper:
            return
        if found is None:
            raise errors.Unauthorized("the bearer token is not valid")
        if auth.Scope.READ not in found.scopes:
            raise errors.Forbidden(
                f"this token lacks the {auth.Scope.READ.value!r} scope",
                missing_scope=auth.Scope.READ.value,
            )

    def allows(self, request: web.Request) -> bool:
        if not request.get(HOST_LISTED, True):
            return False
        try:
            self.check(request)
        except (errors.Unauthorized, errors.Forbidden):
            return False
        return True


READERS = web.AppKey("ops_readers", OpsReaders)
