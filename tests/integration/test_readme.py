"""The README's commands, run as written (ports swapped for free ones), so it cannot drift."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import read_accounts_file
from tests.integration.processes import free_port
from tests.unit.test_packaging import settings_variables


def readme(repo_root: Path) -> str:
    return (repo_root / "README.md").read_text()


def section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_make_targets_and_demo_options_in_the_readme_exist(repo_root: Path) -> None:
    makefile = (repo_root / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    mentioned = set(re.findall(r"`?make ([\w-]+)", readme(repo_root)))
    assert mentioned <= targets, mentioned - targets
    demo_args = re.search(r'DEMO_ARGS="([^"]+)"', readme(repo_root))
    assert demo_args is not None
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo", *demo_args.group(1).split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_configuration_table_lists_every_variable_the_settings_read(repo_root: Path) -> None:
    table = section(readme(repo_root), "Configuration")
    first_cells = re.findall(r"^\| ([^|]+) \|", table, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z0-9_]+)`", cell)}
    assert documented == settings_variables()


def test_the_accounts_file_example_is_valid(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (example,) = blocks(section(readme(repo_root), "Configuration"), "toml")
    for variable in re.findall(r'_env = "(\w+)"', example):
        monkeypatch.setenv(variable, "x")
    path = tmp_path / "accounts.toml"
    path.write_text(example)
    assert {a.name for a in read_accounts_file(path)} == {"emea", "staging"}


@pytest.fixture
def ports() -> dict[str, str]:
    return {"8080": str(free_port()), "9000": str(free_port())}


def with_ports(command: str, ports: dict[str, str]) -> str:
    for default, port in ports.items():
        command = command.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
        command = command.replace(f"--port {default}", f"--port {port}")
    return command


@pytest.fixture
def background(repo_root: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


async def test_the_try_it_session_works_as_written(
    repo_root: Path,
    tmp_path: Path,
    ports: dict[str, str],
    background: list[subprocess.Popen[bytes]],
) -> None:
    simulate, serve, *session = blocks(section(readme(repo_root), "Try it"), "sh")
    env = {
        **os.environ,
        "ORCH_PORT": ports["8080"],
        "ORCH_DATA_DIR": str(tmp_path / "data"),
        "PATH": f"{repo_root / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    env.pop("DATABASE_URL", None)
    with (tmp_path / "background.log").open("wb") as log:  # the children keep their own copy
        for command in (simulate, serve):
            background.append(
                subprocess.Popen(  # noqa: ASYNC220 - spawning does not block
                    ["bash", "-c", with_ports(command, ports)],
                    cwd=repo_root,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    ready = f"http://127.0.0.1:{ports['8080']}/readyz"
    for _ in range(300):
        probe = await asyncio.create_subprocess_exec(
            "curl", "-sf", ready, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if await probe.wait() == 0:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"the service did not come up: {(tmp_path / 'background.log').read_text()}")

    script = "set -euo pipefail\n" + "\n".join(with_ports(block, ports) for block in session)
    run = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), timeout=60)
    assert run.returncode == 0, err.decode()
    text = out.decode()
    assert '"status":"confirmed"' in text
    assert '"confirmed_via":"webhook"' in text
    assert '"cause":"webhook"' in text
    assert '"confirmed":1' in text
