"""`orchestrator enqueue | status | list | retry`, run as processes against the service on
loopback, with only ORCH_URL and ORCH_TOKEN set (the service's own settings are broken on
purpose: the client must not read them)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.integration.conftest import Harness
from tests.tokens import entry
from tests.tokens import token as tok

TOKENS = {
    "api_tokens": ",".join(
        [entry("writer", "enqueue+read"), entry("reader", "read"), entry("boss")]
    )
}
BOSS = {"Authorization": f"Bearer {tok('boss')}"}
BOUND_S = 60


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)


def client_env(harness: Harness, label: str | None) -> dict[str, str]:
    """The client's environment, with the token labelled `label` (`wrong`: no such token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "DATABASE_URL"))}
    env.update(ORCH_URL=str(harness.client.make_url("")).rstrip("/"))
    env.update(ORCH_PORT="not a port", ORCH_API_TOKENS="x:nonsense", DATABASE_URL="nowhere")
    if label is not None:
        env["ORCH_TOKEN"] = "wrong" if label == "wrong" else tok(label)
    return env


async def start(harness: Harness, *argv: str, token: str | None = "boss") -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *argv,
        env=client_env(harness, token),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: Any) -> Run:
    async with asyncio.timeout(BOUND_S):
        out, err = await proc.communicate()
    return Run(proc.returncode, out.decode(), err.decode())


async def cli(harness: Harness, *argv: str, token: str | None = "boss") -> Run:
    return await finish(await start(harness, *argv, token=token))


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_enqueue_status_list_and_retry_as_json(harness: Harness) -> None:
    run = await cli(
        harness,
        "enqueue",
        "--provider",
        "dropbox_sign",
        "sr-cli-1",
        "--reason",
        "offboarding",
        "--idempotency-key",
        "cli-key-1",
        "--json",
        token="writer",
    )
    assert run.code == 0, run.err
    created = run.json()
    assert created["resource_id"] == "sr-cli-1" and created["reason"] == "offboarding"
    again = await cli(
        harness,
        "enqueue",
        "--provider",
        "dropbox_sign",
        "sr-cli-1",
        "--reason",
        "offboarding",
        "--idempotency-key",
        "cli-key-1",
        "--json",
    )
    assert again.code == 0 and again.json()["id"] == created["id"]

    run = await cli(harness, "status", created["id"], "--json", token="reader")
    assert run.code == 0, run.err
    assert run.json()["status"] == "queued"

    run = await cli(harness, "list", "--status", "queued", "--limit", "5", "--json")
    assert run.code == 0, run.err
    assert [item["id"] for item in run.json()["items"]] == [created["id"]]

    run = await cli(harness, "retry", created["id"], "--reason", "by hand", "--json")
    assert run.code == 0, run.err
    assert run.json()["status"] == "queued"
    response = await harness.client.get(f"/v1/cancellations/{created['id']}/events", headers=BOSS)
    assert [e["cause"] for e in (await response.json())["events"]][-1] == "retry_requested"


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_tables_by_default(harness: Harness) -> None:
    run = await cli(harness, "enqueue", "--provider", "dropbox_sign", "sr-cli-table")
    assert run.code == 0, run.err
    assert "created" in run.out and "sr-cli-table" in run.out and "queued" in run.out
    ident = await harness.client.get("/v1/cancellations", headers=BOSS)
    listed = (await ident.json())["items"][0]["id"]
    run = await cli(harness, "list")
    assert run.code == 0, run.err
    assert listed in run.out and "sr-cli-table" in run.out
    run = await cli(harness, "status", listed)
    assert run.code == 0 and listed in run.out and "dropbox_sign" in run.out


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_status_follow_prints_each_change_until_the_end(harness: Harness) -> None:
    created = await harness.enqueue("sr-cli-follow", headers=BOSS)
    follow = await start(harness, "status", created["id"], "--follow", "--json", token="reader")
    # The first state is printed once the client has it; then it long-polls for the rest.
    assert follow.stdout is not None
    async with asyncio.timeout(BOUND_S):
        first = orjson.loads(await follow.stdout.readline())
    assert first["status"] == "queued"
    await harness.dispatch()
    run = await finish(follow)
    assert run.code == 0, run.err
    states = [first["status"]] + [orjson.loads(line)["status"] for line in run.out.splitlines()]
    assert states[0] == "queued" and states[-1] == "confirmed"
    assert len(states) >= 2


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_errors_print_the_problem_detail_and_exit_non_zero(harness: Harness) -> None:
    created = await harness.enqueue("sr-cli-err", headers=BOSS)
    cases: list[tuple[tuple[str, ...], str | None, int, str]] = [
        (("retry", created["id"], "--reason", "x"), "writer", 1, "lacks the 'admin' scope"),
        (("list",), None, 1, "Authorization: Bearer"),
        (("list",), "wrong", 1, "not valid"),
        (("status", "00000000-0000-0000-0000-000000000000"), "reader", 1, "no cancellation"),
        (("enqueue", "--provider", "dropbox_sign", "has space"), "writer", 1, "resource_id"),
        (("enqueue", "--provider", "dropbox_sign", "x", "--param", "novalue"), "writer", 2, "KEY"),
    ]
    for argv, token, code, text in cases:
        run = await cli(harness, *argv, token=token)
        assert run.code == code, (argv, run.out, run.err)
        assert text in run.err, (argv, run.err)
        assert "Traceback" not in run.err
        assert run.out == ""


async def test_an_unreachable_service_is_an_error_naming_it(harness: Harness) -> None:
    env = client_env(harness, None)
    env["ORCH_URL"] = "http://127.0.0.1:9"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "list",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    run = await finish(proc)
    assert run.code == 1
    assert "cannot reach http://127.0.0.1:9" in run.err
