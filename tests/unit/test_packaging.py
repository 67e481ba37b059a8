"""docker-compose.yml and the Dockerfile, checked by parsing: no Docker engine runs here."""

from __future__ import annotations

import os
import re
import tomllib
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


def compose(repo_root: Path, name: str = "docker-compose.yml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / name).read_text())
    return data


def demo(repo_root: Path) -> dict[str, Any]:
    return compose(repo_root, "docker-compose.demo.yml")


#: The simulators' keys: public (orchestrator/simulator), so only ever the demo's.
SIMULATOR_KEYS = {
    "sim-dropbox-sign-api-key",
    "sim-truto-token",
    "sim-truto-webhook-secret",
    "sim-aptly-token",
}


def test_compose_runs_postgres_and_the_service_and_the_demo_file_adds_the_simulators(
    repo_root: Path,
) -> None:
    projects = [(compose(repo_root), "orchestrator"), (demo(repo_root), "orchestrator-demo")]
    for project, service_name in projects:
        services = project["services"]
        postgres = services["postgres"]
        image, _, tag = postgres["image"].partition(":")
        assert image == "postgres" and int(tag) >= 16
        assert postgres["healthcheck"]["test"]
        volume = postgres["volumes"][0].split(":")[0]
        assert volume in project["volumes"]  # a named volume, not a bind mount
        service = services[service_name]
        assert service["build"] == "."
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert compose(repo_root)["name"] != demo(repo_root)["name"]  # volumes apart

    services = demo(repo_root)["services"]
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["orchestrator-demo"]["profiles"] == ["demo"]
    args = parse_simulator_args(services["simulator"]["command"][2:])
    assert args.port == 9000
    assert args.callback_url.startswith("http://orchestrator-demo:8080/")
    allowed = services["orchestrator-demo"]["environment"]["ORCH_ALLOWED_HOSTS"].split(",")
    assert "orchestrator-demo" in allowed  # the simulator's callbacks pass the Host check


def test_every_variable_compose_sets_is_read_by_the_settings(repo_root: Path) -> None:
    for env in (
        compose(repo_root)["services"]["orchestrator"]["environment"],
        demo(repo_root)["services"]["orchestrator-demo"]["environment"],
    ):
        unknown = set(env) - settings_variables()
        assert not unknown, f"compose sets variables the service never reads: {unknown}"


def test_compose_requires_an_api_token(repo_root: Path) -> None:
    """The service listens on 0.0.0.0 there, where it refuses to run without a token."""
    for env in (
        compose(repo_root)["services"]["orchestrator"]["environment"],
        demo(repo_root)["services"]["orchestrator-demo"]["environment"],
    ):
        assert env["ORCH_HOST"] == "0.0.0.0"
        assert re.fullmatch(r"\$\{ORCH_API_TOKENS:\?.+\}", env["ORCH_API_TOKENS"])
        # ...and a key that names it (issue 16: a token's name is never a hash of the token).
        assert re.fullmatch(r"\$\{ORCH_SECRET_KEY:\?.+\}", env["ORCH_SECRET_KEY"])


def test_plain_compose_refuses_to_start_without_real_keys_and_holds_no_simulator_key(
    repo_root: Path,
) -> None:
    """Compose interpolates the whole file before it picks services, so the simulators'
    public keys and plain-http providers live in another file: here no key falls back to
    anything, the Dropbox Sign key is required (`${VAR:?message}`), and every other provider
    setting is passed only when set (no value: unset in the container, not empty)."""
    text = (repo_root / "docker-compose.yml").read_text()
    assert not any(key in text for key in SIMULATOR_KEYS)
    assert "ORCH_ALLOW_HTTP_PROVIDERS" not in text and "simulator:9000" not in text
    env = compose(repo_root)["services"]["orchestrator"]["environment"]
    assert re.fullmatch(r"\$\{DROPBOX_SIGN_API_KEY:\?.+\}", env["DROPBOX_SIGN_API_KEY"])
    for variable in (
        "DROPBOX_SIGN_BASE_URL",
        "TRUTO_API_TOKEN",
        "TRUTO_BASE_URL",
        "TRUTO_WEBHOOK_SECRET",
        "APTLY_TOKEN",
        "APTLY_BASE_URL",
    ):
        assert env[variable] is None, f"{variable} must pass through, not default"
    assert not any(isinstance(value, str) and ":-sim" in value for value in env.values()), (
        "no fallback to a simulator value"
    )
    assert all(not service.get("profiles") for service in compose(repo_root)["services"].values())


def test_the_simulators_keys_and_plain_http_are_only_in_the_demo_profile(repo_root: Path) -> None:
    services = demo(repo_root)["services"]
    for name, service in services.items():
        env = service.get("environment") or {}
        uses_simulator = (
            set(map(str, env.values())) & SIMULATOR_KEYS or "ORCH_ALLOW_HTTP_PROVIDERS" in env
        )
        if uses_simulator:
            assert service["profiles"] == ["demo"], name
    demo_env = services["orchestrator-demo"]["environment"]
    assert demo_env["ORCH_ALLOW_HTTP_PROVIDERS"] == "true"
    assert demo_env["DROPBOX_SIGN_API_KEY"] in SIMULATOR_KEYS


def test_the_readme_sets_the_token_compose_requires_and_sends_it(repo_root: Path) -> None:
    text = (repo_root / "README.md").read_text()
    start = text.index("## Running with docker compose")
    (commands,) = re.findall(r"```sh\n(.*?)```", text[start : text.index("\n## ", start)], re.S)
    assert re.search(r"^export ORCH_API_TOKENS=\S+", commands, re.MULTILINE)
    assert 'Authorization: Bearer $ORCH_API_TOKENS" http://127.0.0.1:8080/v1/' in commands
    ports = compose(repo_root)["services"]["orchestrator"]["ports"]
    assert "127.0.0.1:8080:8080" in ports
    assert re.search(r"^export DROPBOX_SIGN_API_KEY=", commands, re.MULTILINE)
    assert "docker compose -f docker-compose.demo.yml --profile demo up" in commands


def dockerfile_stages(repo_root: Path) -> list[str]:
    """The Dockerfile's build stages, each from its FROM line on."""
    text = (repo_root / "Dockerfile").read_text()
    return ["FROM " + part for part in re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]]


def test_the_image_installs_a_wheel_built_in_a_first_stage(repo_root: Path) -> None:
    build, final = dockerfile_stages(repo_root)
    stage = re.match(r"FROM (\S+) AS (\w+)", build)
    assert stage is not None, "the first stage is named, for COPY --from"
    assert re.search(r"^RUN pip wheel --no-deps --wheel-dir (\S+) \.$", build, re.MULTILINE)
    # Everything the wheel is built from is copied into the build stage, and nothing else.
    copied = set(re.findall(r"^COPY (?!--)(.+) \S+$", build, re.MULTILINE))
    sources = {name for line in copied for name in line.split()}
    assert sources == {"pyproject.toml", "README.md", "orchestrator", "migrations"}

    assert re.search(rf"^COPY --from={stage[2]} ", final, re.MULTILINE)
    install = re.search(r"^RUN pip install (\S+)", final, re.MULTILINE)
    assert install is not None and install[1].endswith("*.whl")
    text = "\n".join(dockerfile_stages(repo_root))
    assert not re.search(r"pip install[^\n]*(-e|--editable)\b", text), "installed editable"
    assert "COPY orchestrator" not in final, "the sources stay in the build stage"


def test_dockerignore_keeps_what_the_wheel_is_built_from(repo_root: Path) -> None:
    rules = [
        line
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!orchestrator/", "!migrations/"} <= set(rules)


def test_the_package_links_the_migrations_it_ships(repo_root: Path) -> None:
    """orchestrator/migrations is how the wheel and the editable install find migrations/."""
    link = repo_root / "orchestrator" / "migrations"
    assert link.is_symlink() and os.readlink(link) == "../migrations"
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert "migrations/*.sql" in pyproject["tool"]["setuptools"]["package-data"]["orchestrator"]


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
