"""Bearer tokens with scopes for /v1, compared in constant time.

ORCH_API_TOKENS lists tokens, each optionally with scopes: `abc:enqueue,def:read,
ghi:enqueue+read+admin`. A bare token has every scope. Webhooks never take these tokens:
the providers sign their callbacks instead.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from orchestrator import errors


class Scope(enum.StrEnum):
    ENQUEUE = "enqueue"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Token:
    secret: bytes
    scopes: frozenset[Scope]

    @property
    def name(self) -> str:
        """How the history names whoever used this token: never the token itself."""
        return "token:" + hashlib.sha256(self.secret).hexdigest()[:12]


def parse_tokens(entries: tuple[SecretStr, ...]) -> list[Token]:
    """`token` or `token:scope+scope`; raises ValueError naming an unknown scope."""
    tokens = []
    for entry in entries:
        secret, _, scopes = entry.get_secret_value().partition(":")
        if not scopes:
            tokens.append(Token(secret.encode(), frozenset(Scope)))
            continue
        try:
            tokens.append(Token(secret.encode(), frozenset(Scope(s) for s in scopes.split("+"))))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(
                f"ORCH_API_TOKENS: unknown scope in {scopes!r} (known: {known})"
            ) from None
    return tokens


#: The token that authenticated this request, when tokens are configured.
TOKEN = web.RequestKey("token", Token)


def required_scope(request: web.Request) -> Scope | None:
    """The scope an API call needs; None outside /v1 (health, metrics, webhooks, docs)."""
    if not request.path.startswith("/v1/"):
        return None
    if request.method == "POST":
        if request.path.endswith(("/retry", "/abandon")):
            return Scope.ADMIN
        return Scope.ENQUEUE
    return Scope.READ


def authenticate(tokens: list[Token], presented: str) -> Token | None:
    """The token `presented` is, if any. Every token is compared, so the time taken says
    nothing about which matched (the dashboard's login uses this too)."""
    given = presented.encode()
    found = None
    for token in tokens:
        if hmac.compare_digest(token.secret, given):
            found = token
    return found


def actor(request: web.Request) -> str:
    token = request.get(TOKEN)
    return token.name if token else "anonymous"


def bearer_auth_middleware(entries: tuple[SecretStr, ...]) -> Any:
    tokens = parse_tokens(entries)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        needed = required_scope(request)
        if tokens and needed is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given:
                raise errors.Unauthorized("send Authorization: Bearer <token>")
            found = authenticate(tokens, given.strip())
            if found is None:
                raise errors.Unauthorized("the bearer token is not valid")
            if needed not in found.scopes:
                raise errors.Forbidden(
                    f"this token lacks the {needed.value!r} scope", missing_scope=needed.value
                )
            request[TOKEN] = found
        response: web.StreamResponse = await handler(request)
        return response

    return middleware
