"""Run `orchestrator serve` as a real child process, for crash and shutdown tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import IO, Any

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """One service process; `kill()` is SIGKILL, `terminate()` is a graceful SIGTERM."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        port: int | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.command = command or [sys.executable, "-m", "orchestrator", "serve"]
        self.env = {**os.environ, **env, "ORCH_PORT": str(self.port), "ORCH_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait_exit
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited early: {self.log_path.read_text()[-3000:]}")
                try:
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(
            f"service not ready in {timeout_s}s: {self.log_path.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_log()

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout_s)
        finally:
            self._close_log()
        return code

    def stop(self) -> None:
        """Teardown: whatever state it is in, make sure the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


async def wait_for(
    predicate: Any, timeout_s: float, interval_s: float = 0.1, what: str = "condition"
) -> Any:
    """Poll an async predicate until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout_s}s (last: {value!r})")
        await asyncio.sleep(interval_s)


#: What the wheel is built from (the Dockerfile's build stage copies the same).
WHEEL_SOURCES = ["pyproject.toml", "README.md", "orchestrator", "migrations"]


def run_checked(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command}: {result.stdout}\n{result.stderr}")
    return result.stdout


def install_wheel(repo_root: Path, work: Path) -> Path:
    """bin/ of a fresh venv in `work` holding only the wheel built from the repository, not
    editable. Offline: the dependencies come from this venv through a .pth file."""
    source = work / "source"
    source.mkdir(parents=True)
    for name in WHEEL_SOURCES:
        path = repo_root / name
        if path.is_dir():
            # symlinks=True keeps orchestrator/migrations a link, as git checks it out.
            shutil.copytree(
                path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run_checked(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", str(source)],
        work,
    )
    (wheel,) = (work / "dist").glob("orchestrator-*.whl")
    venv = work / "venv"
    run_checked([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    python = venv / "bin" / "python"
    run_checked(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        work,
    )
    purelib = run_checked(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work
    )
    Path(purelib.strip(), "suite-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would put the sources on the path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return {**env, **extra}
