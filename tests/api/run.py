"""`make test-api`: schemathesis against the running service, twice: as checked out, and as a
user installs it (the wheel, in a fresh venv, not editable). With a token, bounded in time.

Starts an embedded PostgreSQL (a database per run) and the provider simulators, then, for
each of the two installs, `orchestrator serve` on a loopback port (workers running, so the
stateful phase meets real transitions), and runs `st run` with every check and every phase
(schemathesis.toml says how many examples) on the description that service gives a token
holder. Stops everything whatever happens. Exits non-zero if either run failed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.hub import Simulator
from orchestrator.store.embedded import EmbeddedPostgres
from tests.conftest import _admin, with_database
from tests.integration.processes import ServiceProcess, clean_env, install_wheel
from tests.tokens import token

ROOT = Path(__file__).resolve().parents[2]
TOKEN = token("schemathesis")
#: Each run, phases included; both runs and the wheel build stay under four minutes.
MAX_TIME_S = 75


def service_env(dsn: str, sim_server: SimulatorServer) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=dsn,
        ORCH_API_TOKENS=f"{TOKEN};name=schemathesis",
        ORCH_DISPATCH_POLL_S="0.2",
        ORCH_BACKOFF_BASE_S="0.2",
        ORCH_BACKOFF_MAX_S="2",
        DROPBOX_SIGN_RATE_LIMIT_PER_MIN="60000",
        ORCH_LOG_LEVEL="WARNING",
        # callback_url is described (and fuzzed) only where callbacks can be signed; the
        # worker's calls to the generated URLs stay on loopback.
        ORCH_CALLBACK_SECRET="whsec_"
        + base64.b64encode(b"schemathesis-callback-key-32byte").decode(),
        ORCH_CALLBACK_HOSTS="127.0.0.1",
        ORCH_CALLBACK_RETRY_FOR_S="5",
        **sim_server.env(),
    )


async def check(
    name: str, command: list[str], dsn: str, sim_server: SimulatorServer, work: Path
) -> int:
    """Serve with `command`, fuzz it, stop it: schemathesis's exit code."""
    print(f"\n=== schemathesis against {name} ===", flush=True)
    service = ServiceProcess(
        service_env(dsn, sim_server), work / f"{name}.log", command=[*command, "serve"]
    )
    sim_server.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    try:
        service.start()
        await service.wait_ready(timeout_s=60)
        # The description a token holder gets names this instance's accounts and callback
        # hosts; without the token it is the generic one (web/guards.py).
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            http.get(f"{service.url}/openapi.json") as response,
        ):
            response.raise_for_status()
            schema = work / f"{name}-openapi.json"
            schema.write_bytes(await response.read())
        st = [
            str(Path(sys.executable).with_name("st")),
            "run",
            str(schema),
            "--url",
            service.url,
            "--checks",
            "all",
            "--max-time",
            str(MAX_TIME_S),
            *sys.argv[1:],
        ]
        proc = await asyncio.create_subprocess_exec(
            *st, cwd=ROOT, env={**os.environ, "ORCH_TEST_API_TOKEN": TOKEN}
        )
        try:
            return await asyncio.wait_for(proc.wait(), MAX_TIME_S + 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        service.stop()
        if "Traceback" in (work / f"{name}.log").read_text():
            print((work / f"{name}.log").read_text()[-4000:], file=sys.stderr)


async def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="orchestrator-api-test-"))
    server = EmbeddedPostgres(work / "pg")
    try:
        bin_dir = await asyncio.to_thread(install_wheel, ROOT, work / "wheel-build")
        dsn = await asyncio.to_thread(server.start)
        codes = []
        async with SimulatorServer(Simulator()) as sim_server:
            for name, command in (
                ("the checkout", [sys.executable, "-m", "orchestrator"]),
                ("the wheel", [str(bin_dir / "orchestrator")]),
            ):
                database = "api_" + name.split()[-1]
                await _admin(
                    dsn, f"DROP DATABASE IF EXISTS {database}", f"CREATE DATABASE {database}"
                )
                slug = name.replace(" ", "-")
                codes.append(
                    await check(slug, command, with_database(dsn, database), sim_server, work)
                )
        print(f"\nschemathesis exit codes: checkout {codes[0]}, wheel {codes[1]}", flush=True)
        return max(codes)
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("ORCH_LOG_LEVEL", "WARNING")
    sys.exit(asyncio.run(main()))
