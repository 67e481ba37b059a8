"""Typed application keys: every shared resource of the app, defined in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from orchestrator.clock import Clock
from orchestrator.config import Settings
from orchestrator.metrics import Metrics
from orchestrator.providers.base import Provider
from orchestrator.providers.registry import Accounts
from orchestrator.service import Service
from orchestrator.store.changes import ChangeFeed
from orchestrator.store.owner_lock import OwnerLock
from orchestrator.store.repository import Store
from orchestrator.workers.callbacks import CallbackSender
from orchestrator.workers.dispatcher import Dispatcher
from orchestrator.workers.gauges import GaugeReader
from orchestrator.workers.sweeper import Sweeper

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
ACCOUNTS = web.AppKey("accounts", Accounts)
PROVIDERS = web.AppKey("providers", dict[str, Provider])
STORE = web.AppKey("store", Store)
HTTP = web.AppKey("http", aiohttp.ClientSession)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
SWEEPER = web.AppKey("sweeper", Sweeper)
GAUGES = web.AppKey("gauges", GaugeReader)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", Service)
#: Only when ORCH_CALLBACK_SECRET is set: without it no callback is accepted or sent.
CALLBACKS = web.AppKey("callbacks", CallbackSender)
CHANGES = web.AppKey("changes", ChangeFeed)
#: Only when the workers run: the lock that tells other instances this one is alive.
OWNER_LOCK = web.AppKey("owner_lock", OwnerLock)
