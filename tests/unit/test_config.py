"""Settings come from the environment once; a bad value names the variable at fault."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, SecretStr

from orchestrator.config import ConfigError, DatabaseUrl, Settings, load_settings, mask_dsn
from tests.tokens import entry

VARIABLES = [
    str(info.validation_alias.choices[0])
    for info in Settings.model_fields.values()
    if isinstance(info.validation_alias, AliasChoices)
]
ALIASES = [
    str(choice)
    for info in Settings.model_fields.values()
    if isinstance(info.validation_alias, AliasChoices)
    for choice in info.validation_alias.choices
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's own environment must not leak into what these tests read."""
    for name in ALIASES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_every_setting_has_an_environment_variable() -> None:
    assert len(VARIABLES) == len(Settings.model_fields)
    assert len(set(VARIABLES)) == len(VARIABLES)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.port == 8080
    assert settings.host == "127.0.0.1"
    assert settings.dropbox_sign_base_url == "https://api.hellosign.com/v3"
    assert settings.confirm_timeout_s == 3600
    assert settings.sweep_interval_s == 30
    assert settings.max_attempts == 0
    assert settings.retry_for_s == 259_200
    assert settings.retention_s == 7_776_000
    assert settings.max_provider_wait_s == 3600
    assert settings.webhook_clock_skew_s == 300
    assert settings.dropbox_sign_confirm_by == "status"
    assert settings.dropbox_sign_rate_limit_per_min == 100
    assert settings.api_tokens == ()
    assert settings.database_url is None
    assert settings.dropbox_sign_api_key is None
    assert settings.log_level == "INFO"
    assert settings.log_format is None  # chosen by whether stderr is a terminal
    assert settings.max_body_bytes == 1_048_576


READ_CASES = [
    ("DATABASE_URL", "postgresql://u@db/x", "database_url", DatabaseUrl("postgresql://u@db/x")),
    ("ORCH_DATA_DIR", "/var/lib/orch", "data_dir", Path("/var/lib/orch")),
    ("ORCH_HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("ORCH_PORT", "9091", "port", 9091),
    ("ORCH_LOG_LEVEL", "debug", "log_level", "DEBUG"),
    (
        "DROPBOX_SIGN_BASE_URL",
        "http://127.0.0.1:9/v3/",
        "dropbox_sign_base_url",
        "http://127.0.0.1:9/v3",
    ),
    ("ORCH_ALLOW_NO_AUTH", "true", "allow_no_auth", True),
    ("ORCH_LOG_FORMAT", "JSON", "log_format", "json"),
    ("ORCH_LOG_FORMAT", "text", "log_format", "text"),
    ("ORCH_ALLOW_HTTP_PROVIDERS", "1", "allow_http_providers", True),
    ("DROPBOX_SIGN_RATE_LIMIT_PER_MIN", "25", "dropbox_sign_rate_limit_per_min", 25),
    ("ORCH_CONFIRM_TIMEOUT_S", "120", "confirm_timeout_s", 120),
    ("ORCH_SWEEP_INTERVAL_S", "2.5", "sweep_interval_s", 2.5),
    ("ORCH_MAX_ATTEMPTS", "3", "max_attempts", 3),
    ("ORCH_LEASE_S", "45", "lease_s", 45),
    ("ORCH_BACKOFF_BASE_S", "0.5", "backoff_base_s", 0.5),
    ("ORCH_BACKOFF_MAX_S", "60", "backoff_max_s", 60),
    ("ORCH_HTTP_CONNECT_TIMEOUT_S", "1.5", "http_connect_timeout_s", 1.5),
    ("ORCH_HTTP_TIMEOUT_S", "7", "http_timeout_s", 7),
    ("ORCH_DISPATCH_BATCH", "4", "dispatch_batch", 4),
    ("ORCH_DISPATCH_CONCURRENCY", "5", "dispatch_concurrency", 5),
    ("ORCH_DISPATCH_POLL_S", "0.25", "dispatch_poll_s", 0.25),
    ("ORCH_SHUTDOWN_TIMEOUT_S", "3", "shutdown_timeout_s", 3),
    ("ORCH_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
    ("ORCH_DB_POOL_SIZE", "2", "db_pool_size", 2),
    ("ORCH_API_TOKENS", entry("t1"), "api_tokens", (SecretStr(entry("t1")),)),
    ("DROPBOX_SIGN_API_KEY", "sk-1", "dropbox_sign_api_key", SecretStr("sk-1")),
]


@pytest.mark.parametrize(("variable", "value", "field", "expected"), READ_CASES)
def test_each_variable_is_read(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), field) == expected


def test_the_api_key_stays_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPBOX_SIGN_API_KEY", "sk-live-abc")
    settings = load_settings()
    assert isinstance(settings.dropbox_sign_api_key, SecretStr)
    assert settings.dropbox_sign_api_key.get_secret_value() == "sk-live-abc"
    assert "sk-live-abc" not in repr(settings)


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        (
            f"{entry('a')}, {entry('b')},,{entry('c')}",
            (entry("a"), entry("b"), entry("c")),
        ),
        (entry("single"), (entry("single"),)),
        ("", ()),
        (" , ,", ()),
    ],
)
def test_api_tokens_are_split_on_commas(
    monkeypatch: pytest.MonkeyPatch, value: str, tokens: tuple[str, ...]
) -> None:
    monkeypatch.setenv("ORCH_API_TOKENS", value)
    settings = load_settings()
    assert tuple(t.get_secret_value() for t in settings.api_tokens) == tokens


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_PORT", "9000")
    assert load_settings(port=9001).port == 9001


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ORCH_PORT", "abc"),
        ("ORCH_PORT", "70000"),
        ("ORCH_MAX_ATTEMPTS", "-1"),
        ("ORCH_CONFIRM_TIMEOUT_S", "0"),
        ("ORCH_SWEEP_INTERVAL_S", "never"),
        ("DROPBOX_SIGN_BASE_URL", "ftp://x"),
        ("DROPBOX_SIGN_BASE_URL", "api.hellosign.com"),
        ("DROPBOX_SIGN_BASE_URL", "http://api.hellosign.com/v3"),
        ("TRUTO_BASE_URL", "http://sim:9000/truto"),
        ("APTLY_BASE_URL", "http://10.0.0.7/actions"),
        ("ORCH_ALLOW_NO_AUTH", "maybe"),
        ("ORCH_LOG_FORMAT", "xml"),
        ("DROPBOX_SIGN_RATE_LIMIT_PER_MIN", "0"),
        ("ORCH_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value)


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_PORT", "abc")
    monkeypatch.setenv("ORCH_MAX_ATTEMPTS", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "ORCH_PORT" in str(caught.value)
    assert "ORCH_MAX_ATTEMPTS" in str(caught.value)


def test_a_bad_override_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ORCH_MAX_ATTEMPTS"):
        load_settings(max_attempts=-1)


def test_serve_with_a_bad_port_exits_2_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in ALIASES}
    env["ORCH_PORT"] = "abc"
    env["ORCH_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "ORCH_PORT" in done.stderr
    assert not list(tmp_path.iterdir()), "nothing may start before the settings are valid"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/v3",
        "http://127.3.4.5:9000",
        "http://[::1]:9000/truto",
        "http://localhost:9000",
        "http://LOCALHOST./x",
        "https://api.truto.one",
    ],
)
def test_plain_http_to_a_provider_is_allowed_on_loopback(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    for variable in ("DROPBOX_SIGN_BASE_URL", "TRUTO_BASE_URL", "APTLY_BASE_URL"):
        monkeypatch.setenv(variable, url)
    settings = load_settings()
    assert settings.truto_base_url == url.rstrip("/")


def test_plain_http_elsewhere_needs_the_explicit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUTO_BASE_URL", "http://simulator:9000/truto")
    with pytest.raises(ConfigError, match="TRUTO_BASE_URL: must be https"):
        load_settings()
    monkeypatch.setenv("ORCH_ALLOW_HTTP_PROVIDERS", "true")
    assert load_settings().truto_base_url == "http://simulator:9000/truto"


ACCOUNT = """
[[accounts]]
provider = "dropbox_sign"
name = "emea"
base_url = "{url}"
"""


@pytest.mark.parametrize("allow", [False, True])
def test_plain_http_in_the_accounts_file_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, allow: bool
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNT.format(url="http://eu.example.com/v3"))
    monkeypatch.setenv("ORCH_CONFIG", str(path))
    monkeypatch.setenv("ORCH_ALLOW_HTTP_PROVIDERS", str(allow).lower())
    settings = load_settings()
    if allow:
        assert settings.accounts()[-1].base_url == "http://eu.example.com/v3"
        return
    with pytest.raises(ConfigError) as caught:
        settings.accounts()
    assert "ORCH_CONFIG" in str(caught.value)
    assert "'emea'" in str(caught.value)
    assert "https" in str(caught.value)
    path.write_text(ACCOUNT.format(url="http://127.0.0.1:9000/v3"))
    assert settings.accounts()[-1].base_url == "http://127.0.0.1:9000/v3"


@pytest.mark.parametrize(
    ("host", "tokens", "allow", "refused"),
    [
        ("127.0.0.1", "", False, False),
        ("127.0.1.1", "", False, False),
        ("::1", "", False, False),
        ("localhost", "", False, False),
        ("0.0.0.0", "", False, True),
        ("::", "", False, True),
        ("10.1.2.3", "", False, True),
        ("orchestrator.internal", "", False, True),
        ("0.0.0.0", entry("t1"), False, False),
        ("0.0.0.0", "", True, False),
    ],
)
def test_serving_the_network_without_a_token_needs_consent(
    host: str, tokens: str, allow: bool, refused: bool
) -> None:
    settings = load_settings(host=host, api_tokens=tokens, allow_no_auth=allow)
    assert settings.open_to_the_network_without_auth() is refused


def test_serve_on_all_interfaces_without_tokens_refuses_naming_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in ALIASES}
    env["ORCH_HOST"] = "0.0.0.0"
    env["ORCH_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "ORCH_API_TOKENS" in done.stderr
    assert "ORCH_ALLOW_NO_AUTH" in done.stderr
    assert done.stdout == ""
    assert not list(tmp_path.iterdir()), "nothing may start before refusing"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/orch", "postgresql://app:***@db:5432/orch"),
        ("postgresql://app@db/orch", "postgresql://app@db/orch"),
        (
            "postgres://app:p%40ss@db/orch?sslmode=require",
            "postgres://app:***@db/orch?sslmode=require",
        ),
        (
            "postgresql://db/orch?user=app&password=s3cret",
            "postgresql://db/orch?user=app&password=***",
        ),
        ("host=db user=app password=s3cret", "**********"),
    ],
)
def test_the_database_password_is_masked(dsn: str, shown: str) -> None:
    assert mask_dsn(dsn) == shown
    settings = load_settings(database_url=dsn)
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == dsn
    assert shown in repr(settings)
    for rendered in (repr(settings), str(settings), repr(settings.model_dump())):
        assert "s3cret" not in rendered
        assert "p%40ss" not in rendered


def test_the_direct_database_url_is_masked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@pgbouncer:6432/orch")
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgresql://app:s3cret@db:5432/orch")
    settings = load_settings()
    assert isinstance(settings.database_direct_url, DatabaseUrl)
    assert settings.database_direct_url.get_secret_value().endswith("@db:5432/orch")
    assert "postgresql://app:***@db:5432/orch" in repr(settings)
    for rendered in (repr(settings), str(settings), repr(settings.model_dump())):
        assert "s3cret" not in rendered


def test_database_waits_and_pooler_defaults() -> None:
    settings = load_settings()
    assert settings.database_direct_url is None
    assert settings.database_pooler == "none"
    assert settings.db_acquire_timeout_s == 2
    assert settings.db_connect_timeout_s == 2


def test_a_transaction_pooler_needs_a_direct_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """LISTEN through a transaction pooler hears nothing: refuse rather than start with long
    polls that never wake."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@pgbouncer:6432/orch")
    monkeypatch.setenv("ORCH_DATABASE_POOLER", "transaction")
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL: required when"):
        load_settings()
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgresql://app@db:5432/orch")
    assert load_settings().database_pooler == "transaction"
    monkeypatch.setenv("ORCH_DATABASE_POOLER", "session")
    with pytest.raises(ConfigError, match="ORCH_DATABASE_POOLER"):
        load_settings()


def test_a_connect_timeout_beyond_the_acquire_timeout_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_DB_CONNECT_TIMEOUT_S", "5")
    with pytest.raises(ConfigError, match="ORCH_DB_CONNECT_TIMEOUT_S"):
        load_settings()
    monkeypatch.setenv("ORCH_DB_ACQUIRE_TIMEOUT_S", "5")
    assert load_settings().db_connect_timeout_s == 5
