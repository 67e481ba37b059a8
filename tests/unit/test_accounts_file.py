"""ORCH_CONFIG: the accounts file, and the clear errors a wrong one gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, load_settings
from orchestrator.providers.registry import accounts_from_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return path


def test_file_accounts_join_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T2_TOKEN", "secret-2")
    path = write(
        tmp_path,
        '[[accounts]]\nprovider = "truto"\nname = "staging"\nsecret_env = "T2_TOKEN"\n'
        'base_url = "https://staging.example/"\n',
    )
    accounts = accounts_from_settings(load_settings(accounts_file=str(path)))
    staging = accounts.get("truto", "staging")
    assert staging is not None
    assert staging.secret is not None and staging.secret.get_secret_value() == "secret-2"
    assert staging.base_url == "https://staging.example"
    assert accounts.get("truto", "default") is not None
    assert "secret-2" not in repr(staging)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[accounts]\n", "not valid TOML"),
        ('[[accounts]]\nprovider = "truto"\nname = "x"\nsecret = "inline"\n', "Extra inputs"),
        (
            '[[accounts]]\nprovider = "truto"\nname = "x"\nsecret_env = "UNSET_VAR_XYZ"\n',
            "UNSET_VAR_XYZ",
        ),
        ('[[accounts]]\nprovider = "truto"\nname = "bad name"\n', "name"),
        ('[[accounts]]\nprovider = "truto"\nname = "x"\nbase_url = "ftp://x"\n', "http"),
    ],
)
def test_a_wrong_file_is_a_configuration_error(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(accounts_file=str(write(tmp_path, text))).accounts()
    assert expected in str(caught.value)


def test_unknown_provider_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[accounts]]\nprovider = "docusign"\nname = "x"\n')
    with pytest.raises(ConfigError, match="docusign"):
        accounts_from_settings(load_settings(accounts_file=str(path)))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ORCH_CONFIG"):
        load_settings(accounts_file=str(tmp_path / "nope.toml")).accounts()
