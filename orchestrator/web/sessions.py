"""The dashboard's login session: a cookie that names an API token and is signed with it.

The cookie holds the token's public name (the hash prefix the histories show), an expiry
and an HMAC-SHA256 of both keyed with the token's secret; never the token. Nothing is
stored server-side, every instance that has the same ORCH_API_TOKENS accepts it, and
removing a token from ORCH_API_TOKENS ends its sessions at once. The scopes are read from
the current configuration on each request, not from the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from orchestrator.web.auth import Token

COOKIE = "orch_ui_session"
#: How long a login lasts; an operator's working day.
LIFETIME_S = 8 * 3600
_PURPOSE = b"orchestrator-ui-session-v1"


def issue(token: Token, now: datetime) -> str:
    expires = int(now.timestamp()) + LIFETIME_S
    return f"{_public_name(token)}.{expires}.{_mac(token, expires)}"


def verify(tokens: list[Token], value: str, now: datetime) -> Token | None:
    """The token a cookie value was issued for, if it is genuine, unexpired and the token is
    still configured."""
    name, _, rest = value.partition(".")
    expires_text, _, mac = rest.partition(".")
    if not (name and expires_text.isdigit() and mac):
        return None
    expires = int(expires_text)
    if expires <= now.timestamp():
        return None
    found = None
    for token in tokens:
        if _public_name(token) == name and hmac.compare_digest(mac, _mac(token, expires)):
            found = token
    return found


def _public_name(token: Token) -> str:
    return token.name.removeprefix("token:")


def _mac(token: Token, expires: int) -> str:
    message = b"|".join([_PURPOSE, _public_name(token).encode(), str(expires).encode()])
    return hmac.new(token.secret, message, hashlib.sha256).hexdigest()
