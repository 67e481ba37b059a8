"""docker-compose.yml and the Dockerfile, checked by parsing: no Docker engine runs here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices

from orchestrator.config import Settings
from orchestrator.simulator.__main__ import _parse as parse_simulator_args


def settings_variables() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
    return names


def compose(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return data


def test_compose_runs_postgres_the_service_and_a_demo_profile(repo_root: Path) -> None:
    services = compose(repo_root)["services"]
    postgres = services["postgres"]
    image, _, tag = postgres["image"].partition(":")
    assert image == "postgres" and int(tag) >= 16
    assert postgres["healthcheck"]["test"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose(repo_root)["volumes"]  # a named volume, not a bind mount

    service = services["orchestrator"]
    assert service["build"] == "."
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["simulator"]["profiles"] == ["demo"]
    args = parse_simulator_args(services["simulator"]["command"][2:])
    assert args.port == 9000


def test_every_variable_compose_sets_is_read_by_the_settings(repo_root: Path) -> None:
    env = compose(repo_root)["services"]["orchestrator"]["environment"]
    unknown = set(env) - settings_variables()
    assert not unknown, f"compose sets variables the service never reads: {unknown}"


def test_compose_requires_an_api_token(repo_root: Path) -> None:
    """The service listens on 0.0.0.0 there, where it refuses to run without a token."""
    env = compose(repo_root)["services"]["orchestrator"]["environment"]
    assert env["ORCH_HOST"] == "0.0.0.0"
    assert re.fullmatch(r"\$\{ORCH_API_TOKENS:\?.+\}", env["ORCH_API_TOKENS"])


def test_dockerfile_is_slim_non_root_and_checks_readiness(repo_root: Path) -> None:
    text = (repo_root / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim$", text, re.MULTILINE)
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user[-1] not in {"root", "0"}
    assert "/readyz" in re.search(r"HEALTHCHECK[\s\S]*?CMD (.*)", text).group(1)  # type: ignore[union-attr]
    assert re.search(r'^CMD \["orchestrator", "serve"\]$', text, re.MULTILINE)
    for name in re.findall(r"^ENV ([\s\S]*?)\n\n", text, re.MULTILINE):
        for variable in re.findall(r"(ORCH_\w+|DROPBOX_\w+|TRUTO_\w+|APTLY_\w+)=", name):
            assert variable in settings_variables()
