"""`orchestrator serve | migrate | simulate | demo | callback-secret | sessions revoke`, and
the API client's commands
(`enqueue | status | list | retry`, in client_cli): the command line, the only other composer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from orchestrator import client_cli, logs, tokens
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import ConfigError, Settings, load_settings
from orchestrator.providers import registry
from orchestrator.store import clock_check, migrations
from orchestrator.store.db import CONNECTION_ERRORS
from orchestrator.store.embedded import EmbeddedPostgres

log = logging.getLogger("orchestrator")


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format, sys.stderr)


@dataclass(frozen=True)
class Dsns:
    """`pooled` serves the connection pool and may be a transaction-mode pooler; `direct` is
    PostgreSQL itself, for migrations (a session advisory lock), LISTEN and one-off checks."""

    pooled: str
    direct: str


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Dsns]:
    """The DSNs to use: DATABASE_URL (and DATABASE_DIRECT_URL), or an embedded server kept
    for the duration."""
    if settings.database_url:
        pooled = settings.database_url.get_secret_value()
        direct = settings.database_direct_url
        yield Dsns(pooled, direct.get_secret_value() if direct else pooled)
        return
    server = EmbeddedPostgres(settings.data_dir)
    dsn = server.start()
    try:
        yield Dsns(dsn, dsn)
    finally:
        server.stop()


async def apply_migrations(dsn: str, wait_s: float = 60) -> list[int]:
    """Apply pending migrations, waiting for the database to come up (compose starts both)."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(wait_s),
        wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_exception_type(CONNECTION_ERRORS),
        reraise=True,
    ):
        with attempt:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                return await migrations.migrate(conn)
            finally:
                await conn.close()
    raise AssertionError("unreachable")


async def compare_clocks(dsn: str, clock: Clock | None = None) -> None:
    """Warn when this instance's clock and PostgreSQL's disagree (leases depend on it)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await clock_check.check_clock(conn, clock or SystemClock())
        finally:
            await conn.close()
    except CONNECTION_ERRORS as exc:
        log.warning("could not compare this instance's clock with PostgreSQL's: %s", exc)


async def prepare_database(dsn: str) -> None:
    """On the direct connection: the migrations' advisory lock is a session's."""
    await apply_migrations(dsn)
    await compare_clocks(dsn)


def cmd_migrate(settings: Settings) -> int:
    with database(settings) as dsns:
        try:
            applied = asyncio.run(apply_migrations(dsns.direct))
        except migrations.MigrationError as exc:
            print(f"orchestrator: {exc}", file=sys.stderr)
            return 1
    print(f"applied {len(applied)} migration(s); schema is at {migrations.latest_version()}")
    return 0


def cmd_serve(settings: Settings) -> int:
    from orchestrator.web.app import create_app

    log.debug("settings: %s", settings)  # secrets are masked by their types
    with database(settings) as dsns:
        try:
            asyncio.run(prepare_database(dsns.direct))
        except migrations.MigrationError as exc:
            print(f"orchestrator: {exc}", file=sys.stderr)
            return 1
        app = create_app(settings, dsns.pooled, direct_dsn=dsns.direct)
        log.info("serving on http://%s:%d", settings.host, settings.port)
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout_s,
            access_log=None,
            print=None,
        )
    return 0


def check_tokens(settings: Settings, accounts: registry.Accounts) -> None:
    """A token limited to an account that is not configured stops start-up (the grammar
    itself is checked when the settings are read)."""
    for spec in settings.tokens():
        for listed in sorted(spec.accounts or ()):
            provider, _, name = listed.partition("/")
            if accounts.get(provider, name) is None:
                raise ConfigError(
                    f"invalid configuration: ORCH_API_TOKENS: token {spec.name!r} names the"
                    f" account {listed!r}, which is not configured"
                )


def cmd_callback_secret(settings: Settings, name: str) -> int:
    """Print the secret a receiver verifies its callbacks with (tokens.callback_secret)."""
    if settings.callback_secret is None:
        print("orchestrator: ORCH_CALLBACK_SECRET is not set", file=sys.stderr)
        return 2
    name = name.removeprefix("token:")
    known = [t.name for t in settings.tokens()] or [tokens.ANONYMOUS]
    if name not in known:
        print(
            f"orchestrator: no token named {name!r} in ORCH_API_TOKENS (known: {', '.join(known)})",
            file=sys.stderr,
        )
        return 2
    print(tokens.callback_secret(settings.callback_secret.get_secret_value(), name))
    return 0


def cmd_revoke_sessions(settings: Settings, name: str | None) -> int:
    """End dashboard sessions on the server: one token's (by name) or every token's."""
    from orchestrator.store.db import create_pool
    from orchestrator.store.sessions import Sessions

    async def revoke(dsn: str) -> int:
        pool = await create_pool(dsn, 1)
        try:
            return await Sessions(pool).revoke(name)
        finally:
            await pool.close()

    with database(settings) as dsns:
        ended = asyncio.run(revoke(dsns.direct))
    print(f"ended {ended} session(s)" + (f" of token {name!r}" if name else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        # The simulators stand in for the providers: they read none of the service's settings.
        from orchestrator.simulator.__main__ import main as simulate

        return simulate(argv[1:])
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API, the dispatcher and the sweeper")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    sub.add_parser("simulate", help="run the provider simulators on loopback (see --help)")
    client_cli.add_commands(sub)
    secret = sub.add_parser(
        "callback-secret", help="print the whsec_ secret a callback receiver verifies with"
    )
    secret.add_argument("--token", required=True, help="the enqueuing token's name")
    sessions = sub.add_parser("sessions", help="dashboard sessions")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    revoke = sessions_sub.add_parser("revoke", help="end sessions on the server")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--token", help="end the sessions of the token with this name")
    which.add_argument("--all", action="store_true", help="end every session")
    demo = sub.add_parser("demo", help="the whole job end to end on this machine, self-checked")
    demo.add_argument("--count", type=int, default=300, help="cancels in the batch")
    demo.add_argument("--drop-rate", type=float, default=0.1, help="share of callbacks dropped")
    demo.add_argument("--error-rate", type=float, default=0.05, help="share of 5xx answers")
    demo.add_argument("--rate-429", type=float, default=0.03, help="share of 429 answers")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--keep-running", action="store_true", help="keep serving afterwards")
    demo.add_argument("--seed", type=int, default=7, help="the simulators' fault sequence")
    args = parser.parse_args(argv)
    if args.command in client_cli.COMMANDS:
        # A client of a running service: it reads ORCH_URL and ORCH_TOKEN, nothing else.
        return client_cli.run(args)

    try:
        settings = load_settings()
        # A wrong ORCH_CONFIG, or a token limited to an unknown account, stops start-up too.
        check_tokens(settings, registry.accounts_from_settings(settings))
    except ConfigError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve" and settings.open_to_the_network_without_auth():
        print(
            f"orchestrator: refusing to serve on {settings.host} without ORCH_API_TOKENS: anyone"
            " who can reach it could cancel any request. Set ORCH_API_TOKENS, listen on"
            " 127.0.0.1 (ORCH_HOST), or set ORCH_ALLOW_NO_AUTH=true if the network is trusted.",
            file=sys.stderr,
        )
        return 2
    _configure_logging(settings)
    if args.command == "serve":
        return cmd_serve(settings)
    if args.command == "callback-secret":
        return cmd_callback_secret(settings, args.token)
    if args.command == "sessions":
        name = None if args.all else args.token.removeprefix("token:")
        return cmd_revoke_sessions(settings, name)
    if args.command == "demo":
        from orchestrator import demo as demo_module

        return demo_module.main(
            demo_module.DemoOptions(
                count=args.count,
                drop_callback_rate=args.drop_rate,
                error_5xx_rate=args.error_rate,
                rate_429=args.rate_429,
                port=args.port,
                keep_running=args.keep_running,
                seed=args.seed,
            )
        )
    return cmd_migrate(settings)


if __name__ == "__main__":
    sys.exit(main())
