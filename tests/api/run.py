"""`make test-api`: schemathesis against the running service, with a token, bounded in time.

Starts an embedded PostgreSQL, the provider simulators and the service (workers running, so
the stateful phase meets real transitions) on loopback ports, runs `st run` on
/openapi.json with every check and every phase (schemathesis.toml says how many examples),
and stops everything whatever happens. Exits with schemathesis's own code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sys
import tempfile
from pathlib import Path

import asyncpg
from aiohttp import web

from orchestrator.config import load_settings
from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.hub import Simulator
from orchestrator.store import migrations
from orchestrator.store.embedded import EmbeddedPostgres
from orchestrator.web.app import create_app
from tests.integration.processes import free_port
from tests.tokens import token

ROOT = Path(__file__).resolve().parents[2]
TOKEN = token("schemathesis")
#: The whole run, phases included; the Makefile target stays under three minutes.
MAX_TIME_S = 100


async def serve_and_check(dsn: str, st_args: list[str]) -> int:
    async with SimulatorServer(Simulator()) as sim_server:
        sim = sim_server.simulator
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        sim.dropbox_sign.callback_url = f"{url}/webhooks/dropbox_sign"
        settings = load_settings(
            database_url=dsn,
            port=port,
            api_tokens=f"{TOKEN};name=schemathesis",
            dispatch_poll_s=0.2,
            backoff_base_s=0.2,
            backoff_max_s=2,
            dropbox_sign_rate_limit_per_min=60_000,
            **sim_server.settings(),
            # callback_url is described (and fuzzed) only where callbacks can be signed; the
            # worker's calls to the generated URLs stay on loopback.
            callback_secret="whsec_"
            + base64.b64encode(b"schemathesis-callback-key-32byte").decode(),
            callback_hosts="127.0.0.1",
            callback_retry_for_s=5,
        )
        runner = web.AppRunner(create_app(settings, dsn), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            command = [
                str(Path(sys.executable).with_name("st")),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-time",
                str(MAX_TIME_S),
                *st_args,
            ]
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=ROOT, env={**os.environ, "ORCH_TEST_API_TOKEN": TOKEN}
            )
            try:
                return await asyncio.wait_for(proc.wait(), MAX_TIME_S + 60)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        finally:
            await runner.cleanup()


async def main(st_args: list[str]) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="orchestrator-api-test-"))
    server = EmbeddedPostgres(data_dir)
    try:
        dsn = await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(dsn)
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()
        return await serve_and_check(dsn, st_args)
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("ORCH_LOG_LEVEL", "WARNING")
    sys.exit(asyncio.run(main(sys.argv[1:])))
