"""One aiohttp application serving all three providers, and a server that runs it on loopback.

Each provider is a sub-application under its own prefix, so the orchestrator is pointed at
the simulator by its base URLs alone (``SimulatorServer.env()``), exactly as at the real
providers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.simulator import control
from orchestrator.simulator.hub import SIMULATOR_KEY, Simulator

# Where each provider's API lives, relative to the server root (the orchestrator's base URLs).
BASE_PATHS = {
    "dropbox_sign": "/dropbox_sign/v3",
    "truto": "/truto",
    "aptly": "/aptly",
}


def create_app(simulator: Simulator | None = None) -> web.Application:
    """The app owns the simulator's background tasks: they stop when the app cleans up."""
    sim = simulator or Simulator()

    @web.middleware
    async def record_path(request: web.Request, handler: Handler) -> web.StreamResponse:
        sim.received.append((request.method, request.raw_path))
        return await handler(request)

    app = web.Application(middlewares=[record_path])
    app[SIMULATOR_KEY] = sim
    for name, provider in sim.providers.items():
        app.add_subapp(f"/{name}", provider.make_app())
    control.add_routes(app.router)
    app.cleanup_ctx.append(_close_simulator)
    return app


async def _close_simulator(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SIMULATOR_KEY].aclose()


class SimulatorServer:
    """Serve a ``Simulator`` on ``host:port`` (port 0 picks a free one) until ``stop()``.

    ``shutdown_timeout`` is short because handlers sleeping in the ``slow`` fault should
    not hold a test's teardown for aiohttp's default minute.
    """

    def __init__(
        self,
        simulator: Simulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 0.5,
    ) -> None:
        self.simulator = simulator or Simulator()
        self.host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the simulator server is already running")
        runner = web.AppRunner(
            create_app(self.simulator), shutdown_timeout=self._shutdown_timeout, access_log=None
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The server root, where ``/_sim/...`` lives."""
        return f"http://{self.host}:{self.port}"

    @property
    def dropbox_sign_url(self) -> str:
        return self.url + BASE_PATHS["dropbox_sign"]

    @property
    def truto_url(self) -> str:
        return self.url + BASE_PATHS["truto"]

    @property
    def aptly_url(self) -> str:
        return self.url + BASE_PATHS["aptly"]

    def _pointing(self) -> list[tuple[str, str, str]]:
        """(environment variable, orchestrator setting, value) for each provider setting
        that points the orchestrator at this server: env() and settings() read it."""
        sim = self.simulator
        return [
            ("DROPBOX_SIGN_BASE_URL", "dropbox_sign_base_url", self.dropbox_sign_url),
            ("DROPBOX_SIGN_API_KEY", "dropbox_sign_api_key", sim.dropbox_sign.settings.api_key),
            ("TRUTO_BASE_URL", "truto_base_url", self.truto_url),
            ("TRUTO_API_TOKEN", "truto_api_token", sim.truto.settings.token),
            ("TRUTO_WEBHOOK_SECRET", "truto_webhook_secret", sim.truto.settings.webhook_secret),
            ("APTLY_BASE_URL", "aptly_base_url", self.aptly_url),
            ("APTLY_API_TOKEN", "aptly_token", sim.aptly.settings.token),
        ]

    def env(self) -> dict[str, str]:
        """Environment variables that point the orchestrator at this server."""
        return {variable: value for variable, _, value in self._pointing()}

    def settings(self) -> dict[str, str]:
        """The same as orchestrator settings (load_settings(**server.settings()))."""
        return {name: value for _, name, value in self._pointing()}
