"""`make lint` as part of the suite: ruff (lint and format) and mypy --strict stay clean, and
the import contracts of pyproject.toml (import-linter; docs/architecture.md) hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = {
    "ruff check": [sys.executable, "-m", "ruff", "check", "orchestrator", "tests"],
    "ruff format": [sys.executable, "-m", "ruff", "format", "--check", "orchestrator", "tests"],
    "mypy": [sys.executable, "-m", "mypy"],
    "import contracts": [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_code_is_clean(tool: str, repo_root: Path) -> None:
    result = subprocess.run(TOOLS[tool], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
