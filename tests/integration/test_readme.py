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

from orchestrator.config import ClientSettings, read_accounts_file
from tests.integration.processes import free_port
from tests.unit.test_packaging import settings_variables


def readme(repo_root: Path) -> str:
    return (repo_root / "README.md").read_text()


def section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def subsection(text: str, heading: str) -> str:
    start = text.index(f"### {heading}")
    end = min(
        (i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i != -1),
        default=len(text),
    )
    return text[start:end]


def client_variables() -> set[str]:
    """What the command-line client reads (ORCH_URL, ORCH_TOKEN)."""
    return {
        str(choice)
        for field in ClientSettings.model_fields.values()
        for choice in getattr(field.validation_alias, "choices", ())
    }


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
    assert documented == settings_variables() | client_variables()
    assert not client_variables() & settings_variables()


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


async def start_in_background(
    commands: list[str],
    repo_root: Path,
    tmp_path: Path,
    ports: dict[str, str],
    background: list[subprocess.Popen[bytes]],
) -> None:
    """Run the README's long-running commands (simulators, service) until the service is
    ready, as a reader would in other terminals."""
    env = {
        **os.environ,
        "ORCH_PORT": ports["8080"],
        "ORCH_DATA_DIR": str(tmp_path / "data"),
        "PATH": f"{repo_root / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    env.pop("DATABASE_URL", None)
    with (tmp_path / "background.log").open("wb") as log:  # the children keep their own copy
        for command in commands:
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


async def run_session(
    session: list[str], repo_root: Path, tmp_path: Path, ports: dict[str, str]
) -> tuple[str, str]:
    """The README's commands in one shell, stopping at the first that fails."""
    script = "set -euo pipefail\n" + "\n".join(with_ports(block, ports) for block in session)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PATH"] = f"{repo_root / '.venv' / 'bin'}:{os.environ['PATH']}"
    run = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), timeout=120)
    assert run.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def test_the_try_it_session_works_as_written(
    repo_root: Path,
    tmp_path: Path,
    ports: dict[str, str],
    background: list[subprocess.Popen[bytes]],
) -> None:
    simulate, serve, *session = blocks(section(readme(repo_root), "Try it"), "sh")
    await start_in_background([simulate, serve], repo_root, tmp_path, ports, background)
    text, _ = await run_session(session, repo_root, tmp_path, ports)
    assert '"status":"confirmed"' in text
    assert '"confirmed_via":"reconciliation"' in text
    assert '"cause":"webhook_needs_check"' in text
    assert '"cause":"status_check"' in text
    assert '"next":null' in text
    assert '"confirmed":1' in text


#: The subsections of "Integrating" whose commands this test runs, in order (others, such as
#: the completion callbacks, have their own tests).
INTEGRATING = (
    "Enqueue, then follow it to the end",
    "Batch enqueue",
    "Scoped tokens",
    "The command line",
)


async def test_the_integrating_examples_work_as_written(
    repo_root: Path,
    tmp_path: Path,
    ports: dict[str, str],
    background: list[subprocess.Popen[bytes]],
) -> None:
    text = readme(repo_root)
    simulate = blocks(section(text, "Try it"), "sh")[0]
    integrating = section(text, "Integrating")
    (serve,) = blocks(integrating[: integrating.index("\n### ")], "sh")
    await start_in_background([simulate, serve], repo_root, tmp_path, ports, background)
    session = [
        block for heading in INTEGRATING for block in blocks(subsection(integrating, heading), "sh")
    ]
    out, err = await run_session(session, repo_root, tmp_path, ports)

    lines = out.splitlines()
    assert re.match(r'etag: "[0-9a-f-]{36}-v\d+"', lines[0], re.IGNORECASE), out
    assert '"status":"confirmed"' in lines[1], out
    assert '"confirmed_via":"reconciliation"' in lines[1], out
    assert lines[2] == "304", out
    assert lines[3].startswith("[(202, None), (202, None), (422, [{'field': 'items[2].resource_id'")
    assert '"status":403' in lines[4] and '"missing_scope":"admin"' in lines[4], out
    assert lines[5] == "200", out
    follow = lines[6 : next(i for i, line in enumerate(lines) if line.startswith("┏"))]
    assert follow and "  confirmed  attempts=2  outcome=canceled" in follow[-1], out
    assert lines[-1] == "exit 1", out
    assert "orchestrator: the cancellation is already confirmed" in err, err
