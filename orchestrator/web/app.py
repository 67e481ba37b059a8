"""The composition root: create_app builds everything the service runs on.

Each resource is owned by one cleanup-context generator and released in reverse order:
the pool, then the connection listening for changes, then the HTTP client, then the workers
(stopped first on shutdown, so they can still use the pool and the client to finish or give
back what they hold).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from orchestrator import errors
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Settings
from orchestrator.domain.callbacks import DeliveryPolicy
from orchestrator.domain.destinations import CallbackHosts
from orchestrator.domain.lifecycle import Policy
from orchestrator.metrics import Metrics
from orchestrator.providers import registry
from orchestrator.service import Service, WebhookPolicy
from orchestrator.service.callbacks import CallbackPolicy
from orchestrator.store import db
from orchestrator.store.changes import ChangeFeed
from orchestrator.store.outbox import Outbox
from orchestrator.store.owner_lock import OwnerLock
from orchestrator.store.repository import Store
from orchestrator.store.shared import SharedStore
from orchestrator.web import cancellations, docs, keys, ops, schemas, ui, webhooks
from orchestrator.web.access import access_log_middleware
from orchestrator.web.auth import BUCKETS, bearer_auth_middleware, buckets
from orchestrator.web.guards import READERS, OpsReaders, host_check_middleware
from orchestrator.web.problems import problems_middleware
from orchestrator.web.request_id import request_id_middleware
from orchestrator.workers.callback_net import CallbackClient
from orchestrator.workers.callbacks import CallbackSender
from orchestrator.workers.dispatcher import DispatchConfig, Dispatcher
from orchestrator.workers.gauges import GaugeReader
from orchestrator.workers.loop import run_every, supervise
from orchestrator.workers.sweeper import Sweeper

log = logging.getLogger(__name__)


def policy_from(settings: Settings) -> Policy:
    return Policy(
        retry_for_s=settings.retry_for_s,
        max_attempts=settings.max_attempts,
        max_provider_wait_s=settings.max_provider_wait_s,
        confirm_timeout_s=settings.confirm_timeout_s,
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=settings.backoff_max_s,
    )


def _stop_process(_: BaseException) -> None:
    """A worker died of a bug: stop the whole process cleanly rather than limp on without it."""
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(
    settings: Settings,
    dsn: str,
    *,
    direct_dsn: str | None = None,
    clock: Clock | None = None,
    accounts: registry.Accounts | None = None,
    run_workers: bool = True,
    on_worker_crash: object = _stop_process,
) -> web.Application:
    # `dsn` may be a transaction-mode pooler; what needs a session of its own (LISTEN, the
    # owner lock) goes to PostgreSQL itself. Without a direct DSN, the one DSN serves both.
    direct_dsn = direct_dsn or dsn
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            request_id_middleware,
            access_log_middleware,
            problems_middleware,
            host_check_middleware(settings.allowed_host_names()),
            bearer_auth_middleware(settings),
        ],
    )
    app[BUCKETS] = buckets(settings)
    app[READERS] = OpsReaders.from_settings(settings)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.ACCOUNTS] = accounts or registry.accounts_from_settings(settings)
    app[keys.PROVIDERS] = registry.PROVIDERS
    app[keys.METRICS] = metrics = Metrics()

    async def database(app: web.Application) -> AsyncIterator[None]:
        pool = await db.create_pool(
            dsn,
            settings.db_pool_size,
            acquire_timeout_s=settings.db_acquire_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
            statement_cache=settings.database_pooler != "transaction",
        )
        app[keys.STORE] = store = SharedStore(pool, on_flush=metrics.flushed)
        await ui.end_sessions_of_removed_tokens(app, settings)
        yield
        # The workers have stopped and the requests are answered: write what is pending.
        await store.close(settings.shutdown_timeout_s)
        await pool.close()

    async def change_feed(app: web.Application) -> AsyncIterator[None]:
        """One connection per process LISTENs for changes; long polls wait on it."""
        feed = app[keys.CHANGES] = ChangeFeed(
            direct_dsn, connect_timeout_s=settings.db_connect_timeout_s
        )
        stopping = asyncio.Event()
        task = asyncio.create_task(feed.run(stopping), name="change-feed")
        supervise(task, on_worker_crash)  # type: ignore[arg-type]
        yield
        feed.close()
        stopping.set()
        _, pending = await asyncio.wait([task], timeout=settings.shutdown_timeout_s)
        for late in pending:
            late.cancel()

    async def end_long_polls(app: web.Application) -> None:
        """At shutdown, waiting requests answer now rather than hold the shutdown up."""
        app[keys.CHANGES].close()

    async def http_client(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=settings.http_timeout_s, sock_connect=settings.http_connect_timeout_s
        )
        connector = aiohttp.TCPConnector(limit=settings.dispatch_concurrency * 2)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            app[keys.HTTP] = session
            yield

    #: The completion callbacks' own client, never the providers' session: it reaches only
    #: where ORCH_CALLBACK_HOSTS allows, checked on the addresses it connects to.
    callbacks_client = CallbackClient(
        CallbackHosts.parse(settings.callback_hosts), timeout_s=settings.callback_timeout_s
    )

    async def callback_client(app: web.Application) -> AsyncIterator[None]:
        yield
        await callbacks_client.close()

    async def workers(app: web.Application) -> AsyncIterator[None]:
        store = app[keys.STORE]
        dispatcher = Dispatcher(
            store,
            app[keys.HTTP],
            app[keys.PROVIDERS],
            app[keys.ACCOUNTS],
            policy_from(settings),
            DispatchConfig(
                batch=settings.dispatch_batch,
                concurrency=settings.dispatch_concurrency,
                lease_s=settings.lease_s,
                poll_s=settings.dispatch_poll_s,
            ),
            app[keys.CLOCK],
            metrics=metrics,
        )
        sweeper = Sweeper(
            store,
            app[keys.CLOCK],
            retention_s=settings.retention_s,
            served=lambda: list(dispatcher.served()),
            on_work=dispatcher.wake,
            metrics=metrics,
            owner_grace_s=settings.owner_grace_s,
        )
        app[keys.DISPATCHER] = dispatcher
        app[keys.SWEEPER] = sweeper
        app[keys.GAUGES] = gauges = GaugeReader(store, app[keys.CLOCK], metrics)
        app[keys.SERVICE] = Service(
            store,
            app[keys.PROVIDERS],
            app[keys.ACCOUNTS],
            app[keys.CLOCK],
            metrics,
            webhooks=WebhookPolicy(
                replay_window_s=settings.webhook_replay_window_s,
                clock_skew_s=settings.webhook_clock_skew_s,
                confirm_by_status=frozenset(
                    {"dropbox_sign"} if settings.dropbox_sign_confirm_by == "status" else ()
                ),
            ),
            callbacks=CallbackPolicy(
                enabled=settings.callback_secret is not None,
                hosts=CallbackHosts.parse(settings.callback_hosts),
            ),
            on_new_work=dispatcher.wake,
            changes=app[keys.CHANGES],
            max_long_polls=settings.max_long_polls,
        )
        sender = callback_sender(app, store)
        if not run_workers:
            yield
            return
        # The owner lock is held before the first claim and given up after the last release.
        owner_lock = app[keys.OWNER_LOCK] = OwnerLock(direct_dsn, dispatcher.owner)
        dispatcher.may_claim = owner_lock.held
        lock_stopping = asyncio.Event()
        lock_task = asyncio.create_task(owner_lock.run(lock_stopping), name="owner-lock")
        supervise(lock_task, on_worker_crash)  # type: ignore[arg-type]
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(dispatcher.run(stopping), name="dispatcher"),
            asyncio.create_task(
                run_every("sweeper", sweeper.run_once, settings.sweep_interval_s, stopping),
                name="sweeper",
            ),
            asyncio.create_task(
                run_every(
                    "owner check", sweeper.release_dead_owners, settings.owner_check_s, stopping
                ),
                name="owner-check",
            ),
            asyncio.create_task(
                run_every("gauges", gauges.run_once, settings.metrics_interval_s, stopping),
                name="gauges",
            ),
        ]
        if sender is not None:
            tasks.append(
                asyncio.create_task(
                    run_every("callbacks", sender.run_once, settings.callback_poll_s, stopping),
                    name="callbacks",
                )
            )
        for task in tasks:
            supervise(task, on_worker_crash)  # type: ignore[arg-type]
        log.info(
            "dispatcher %s, sweeper, gauge reader%s started",
            dispatcher.owner,
            " and callbacks" if sender is not None else "",
        )
        yield
        stopping.set()
        _, pending = await asyncio.wait(tasks, timeout=settings.shutdown_timeout_s)
        for task in pending:
            task.cancel()
        try:
            await dispatcher.drain(settings.shutdown_timeout_s)
        except errors.DatabaseUnavailable as exc:
            log.warning("could not release leases at shutdown (%s); they expire by themselves", exc)
        lock_stopping.set()
        _, pending = await asyncio.wait([lock_task], timeout=settings.shutdown_timeout_s)
        for late in pending:
            late.cancel()

    def callback_sender(app: web.Application, store: Store) -> CallbackSender | None:
        """The completion callbacks' worker, if a signing secret is configured; without one
        enqueues refuse a callback_url and what the outbox holds waits for a secret."""
        if settings.callback_secret is None:
            return None
        sender = CallbackSender(
            Outbox(store.pool),
            callbacks_client,
            settings.callback_secret.get_secret_value(),
            lambda row: orjson.dumps(schemas.cancellation_out(row)),
            DeliveryPolicy(
                retry_for_s=settings.callback_retry_for_s,
                backoff_base_s=settings.backoff_base_s,
                backoff_max_s=settings.backoff_max_s,
            ),
            app[keys.CLOCK],
            lease_s=settings.lease_s,
            metrics=metrics,
        )
        app[keys.CALLBACKS] = sender
        return sender

    app.cleanup_ctx.extend([database, change_feed, http_client, callback_client, workers])
    app.on_shutdown.append(end_long_polls)
    app.add_routes(cancellations.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(ops.routes)
    app.add_routes(docs.routes)
    ui.setup(app, settings)
    return app
