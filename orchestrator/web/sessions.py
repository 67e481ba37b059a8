"""The dashboard's login session: a random id in a cookie, kept server-side.

The cookie holds 256 random bits and nothing else; the database keeps only their SHA-256
with the token's name and an expiry (store/sessions.py). Nothing about the token can be
learnt from the cookie, logout ends the session on the server (a copied cookie is refused
afterwards), `orchestrator sessions revoke` ends one token's sessions or all, and a token
removed from ORCH_API_TOKENS loses its sessions (refused at once, deleted at start-up). The
scopes are read from the current configuration on each request, not from the session.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from orchestrator.store.sessions import Sessions
from orchestrator.web.auth import Token

COOKIE = "orch_ui_session"
#: How long a login lasts; an operator's working day.
LIFETIME_S = 8 * 3600
#: A cookie longer than this is not one of ours (token_urlsafe(32) is 43 characters).
_MAX_LENGTH = 64


def id_hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


async def issue(store: Sessions, token: Token, now: datetime) -> str:
    """A new session for `token`; returns the cookie's value."""
    value = secrets.token_urlsafe(32)
    await store.open(id_hash(value), token.name, now, now + timedelta(seconds=LIFETIME_S))
    return value


async def verify(store: Sessions, tokens: list[Token], value: str, now: datetime) -> Token | None:
    """The token a live session was opened with, if that token is still configured."""
    if not value or len(value) > _MAX_LENGTH:
        return None
    name = await store.find(id_hash(value), now)
    if name is None:
        return None
    return next((t for t in tokens if t.name == name), None)


async def close(store: Sessions, value: str) -> None:
    if value and len(value) <= _MAX_LENGTH:
        await store.close(id_hash(value))
