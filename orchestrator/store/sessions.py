"""The dashboard's login sessions (0008_who_acted.sql): random ids kept server-side as
their SHA-256, so logout and revocation take effect at once on every instance."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from orchestrator.store.db import translate_errors
from orchestrator.store.queries import QUERIES as Q


class Sessions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def open(self, id_hash: bytes, token_name: str, now: datetime, until: datetime) -> None:
        async with translate_errors():
            await self.pool.execute(Q["open_ui_session"], id_hash, token_name, now, until)

    async def find(self, id_hash: bytes, now: datetime) -> str | None:
        """The token name of the live session with this id hash, if any."""
        async with translate_errors():
            name: str | None = await self.pool.fetchval(Q["find_ui_session"], id_hash, now)
        return name

    async def close(self, id_hash: bytes) -> None:
        async with translate_errors():
            await self.pool.execute(Q["close_ui_session"], id_hash)

    async def revoke(self, token_name: str | None) -> int:
        """End every session of `token_name` (None: of every token); how many ended."""
        async with translate_errors():
            count: int = await self.pool.fetchval(Q["revoke_ui_sessions"], token_name)
        return count

    async def revoke_except(self, token_names: list[str]) -> int:
        async with translate_errors():
            count: int = await self.pool.fetchval(Q["revoke_ui_sessions_except"], token_names)
        return count
