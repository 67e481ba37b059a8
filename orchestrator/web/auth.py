"""Bearer tokens for /v1, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from orchestrator import errors


def bearer_auth_middleware(tokens: tuple[SecretStr, ...]) -> Any:
    expected = [t.get_secret_value().encode() for t in tokens]

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if expected and request.path.startswith("/v1/"):
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given:
                raise errors.Unauthorized("send Authorization: Bearer <token>")
            # Compare against every token, so the time taken says nothing about which matched.
            matched = False
            for token in expected:
                matched |= hmac.compare_digest(token, given.strip().encode())
            if not matched:
                raise errors.Unauthorized("the bearer token is not valid")
        response: web.StreamResponse = await handler(request)
        return response

    return middleware
