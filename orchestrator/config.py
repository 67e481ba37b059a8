"""Settings, read once from the environment. Nothing else in the package reads os.environ."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the environment variable."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    data_dir: Path = Field(Path(".orchestrator"), validation_alias=_env("ORCH_DATA_DIR"))
    host: str = Field("127.0.0.1", validation_alias=_env("ORCH_HOST"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=_env("ORCH_PORT"))
    log_level: str = Field("INFO", validation_alias=_env("ORCH_LOG_LEVEL"))
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), validation_alias=_env("ORCH_API_TOKENS")
    )

    dropbox_sign_api_key: SecretStr | None = Field(
        None, validation_alias=_env("DROPBOX_SIGN_API_KEY")
    )
    dropbox_sign_base_url: str = Field(
        "https://api.hellosign.com/v3", validation_alias=_env("DROPBOX_SIGN_BASE_URL")
    )
    dropbox_sign_rate_limit_per_min: PositiveFloat = Field(
        100, validation_alias=_env("DROPBOX_SIGN_RATE_LIMIT_PER_MIN")
    )

    confirm_timeout_s: PositiveFloat = Field(3600, validation_alias=_env("ORCH_CONFIRM_TIMEOUT_S"))
    sweep_interval_s: PositiveFloat = Field(30, validation_alias=_env("ORCH_SWEEP_INTERVAL_S"))
    max_attempts: PositiveInt = Field(8, validation_alias=_env("ORCH_MAX_ATTEMPTS"))
    lease_s: PositiveFloat = Field(90, validation_alias=_env("ORCH_LEASE_S"))
    backoff_base_s: PositiveFloat = Field(2, validation_alias=_env("ORCH_BACKOFF_BASE_S"))
    backoff_max_s: PositiveFloat = Field(900, validation_alias=_env("ORCH_BACKOFF_MAX_S"))
    http_connect_timeout_s: PositiveFloat = Field(
        5, validation_alias=_env("ORCH_HTTP_CONNECT_TIMEOUT_S")
    )
    http_timeout_s: PositiveFloat = Field(10, validation_alias=_env("ORCH_HTTP_TIMEOUT_S"))
    dispatch_batch: PositiveInt = Field(32, validation_alias=_env("ORCH_DISPATCH_BATCH"))
    dispatch_concurrency: PositiveInt = Field(
        32, validation_alias=_env("ORCH_DISPATCH_CONCURRENCY")
    )
    dispatch_poll_s: PositiveFloat = Field(1.0, validation_alias=_env("ORCH_DISPATCH_POLL_S"))
    shutdown_timeout_s: PositiveFloat = Field(10, validation_alias=_env("ORCH_SHUTDOWN_TIMEOUT_S"))
    max_body_bytes: PositiveInt = Field(1_048_576, validation_alias=_env("ORCH_MAX_BODY_BYTES"))
    db_pool_size: PositiveInt = Field(8, validation_alias=_env("ORCH_DB_POOL_SIZE"))

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(token.strip() for token in value.split(",") if token.strip())
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("dropbox_sign_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


def _variable_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{_variable_name(field)}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
