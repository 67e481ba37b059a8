"""Settings, read once from the environment (and ORCH_CONFIG). Nothing else reads os.environ."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orchestrator import tokens as grammar
from orchestrator.domain.destinations import CallbackHosts


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the environment variable."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class DatabaseUrl(SecretStr):
    """A DSN whose password never shows: repr and str mask it, the rest stays readable for
    the logs. `get_secret_value()` is the DSN to connect with."""

    def _display(self) -> str:
        return mask_dsn(self.get_secret_value())


def mask_dsn(dsn: str) -> str:
    """The DSN with the password (in the authority or a `password=` parameter) replaced."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "**********"
    if not parts.scheme or not parts.netloc:
        return "**********"  # not a URL (key=value form): nothing is safe to show
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or localhost: a listener or a provider only this machine can reach."""
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: The names a loopback-bound service answers to by default (any port).
LOOPBACK_HOST_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def host_allowed(host_header: str, allowed: frozenset[str] | None) -> bool:
    """Whether a request's Host names this service: an entry matches the name with any port,
    or `name:port` exactly. Compared case-insensitively, without a trailing dot."""
    if allowed is None:
        return True
    host = host_header.strip().lower()
    if host in allowed:
        return True
    if host.startswith("["):
        name = host[: host.find("]") + 1] if "]" in host else host
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    return name.rstrip(".") in allowed


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    database_url: DatabaseUrl | None = Field(None, validation_alias=_env("DATABASE_URL"))
    data_dir: Path = Field(Path(".orchestrator"), validation_alias=_env("ORCH_DATA_DIR"))
    host: str = Field("127.0.0.1", validation_alias=_env("ORCH_HOST"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=_env("ORCH_PORT"))
    log_level: str = Field("INFO", validation_alias=_env("ORCH_LOG_LEVEL"))
    # Unset: text when stderr is a terminal, JSON (one object per line) otherwise.
    log_format: Literal["json", "text"] | None = Field(
        None, validation_alias=_env("ORCH_LOG_FORMAT")
    )
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), validation_alias=_env("ORCH_API_TOKENS")
    )
    # Without tokens, `serve` listens only on loopback unless this says the network is trusted.
    allow_no_auth: bool = Field(False, validation_alias=_env("ORCH_ALLOW_NO_AUTH"))
    # Plain-http provider base URLs only on loopback unless this allows them (a local simulator).
    allow_http_providers: bool = Field(False, validation_alias=_env("ORCH_ALLOW_HTTP_PROVIDERS"))

    dropbox_sign_api_key: SecretStr | None = Field(
        None, validation_alias=_env("DROPBOX_SIGN_API_KEY")
    )
    dropbox_sign_base_url: str = Field(
        "https://api.hellosign.com/v3", validation_alias=_env("DROPBOX_SIGN_BASE_URL")
    )
    dropbox_sign_rate_limit_per_min: PositiveFloat = Field(
        100, validation_alias=_env("DROPBOX_SIGN_RATE_LIMIT_PER_MIN")
    )

    truto_api_token: SecretStr | None = Field(None, validation_alias=_env("TRUTO_API_TOKEN"))
    truto_base_url: str = Field("https://api.truto.one", validation_alias=_env("TRUTO_BASE_URL"))
    truto_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("TRUTO_WEBHOOK_SECRET")
    )
    truto_rate_limit_per_min: PositiveFloat | None = Field(
        None, validation_alias=_env("TRUTO_RATE_LIMIT_PER_MIN")
    )
    aptly_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("APTLY_TOKEN", "APTLY_API_TOKEN")
    )
    # Aptly publishes no production base URL: it must be configured.
    aptly_base_url: str | None = Field(None, validation_alias=_env("APTLY_BASE_URL"))
    aptly_rate_limit_per_min: PositiveFloat | None = Field(
        None, validation_alias=_env("APTLY_RATE_LIMIT_PER_MIN")
    )
    webhook_replay_window_s: PositiveFloat = Field(
        300, validation_alias=_env("ORCH_WEBHOOK_REPLAY_WINDOW_S")
    )
    accounts_file: Path | None = Field(None, validation_alias=_env("ORCH_CONFIG"))

    confirm_timeout_s: PositiveFloat = Field(3600, validation_alias=_env("ORCH_CONFIRM_TIMEOUT_S"))
    sweep_interval_s: PositiveFloat = Field(30, validation_alias=_env("ORCH_SWEEP_INTERVAL_S"))
    metrics_interval_s: PositiveFloat = Field(15, validation_alias=_env("ORCH_METRICS_INTERVAL_S"))
    retry_for_s: PositiveFloat = Field(259_200, validation_alias=_env("ORCH_RETRY_FOR_S"))
    max_attempts: NonNegativeInt = Field(0, validation_alias=_env("ORCH_MAX_ATTEMPTS"))
    max_provider_wait_s: PositiveFloat = Field(
        3600, validation_alias=_env("ORCH_MAX_PROVIDER_WAIT_S")
    )
    webhook_clock_skew_s: NonNegativeFloat = Field(
        300, validation_alias=_env("ORCH_WEBHOOK_CLOCK_SKEW_S")
    )
    # Issue 16 (webhooks): a callback only prompts a status check unless `webhook` says the
    # account needs the call budget more than protection from a captured callback.
    dropbox_sign_confirm_by: Literal["webhook", "status"] = Field(
        "status", validation_alias=_env("DROPBOX_SIGN_CONFIRM_BY")
    )
    retention_s: NonNegativeFloat = Field(7_776_000, validation_alias=_env("ORCH_RETENTION_S"))
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

    # Behind a pooler, and bounded database waits (issue 17, items 1 and 5).
    # Postgres itself, for what a transaction pooler cannot carry (LISTEN, session advisory
    # locks, migrations); unset: DATABASE_URL serves both.
    database_direct_url: DatabaseUrl | None = Field(
        None, validation_alias=_env("DATABASE_DIRECT_URL")
    )
    # `transaction`: DATABASE_URL is a transaction-mode pooler (PgBouncer): no named prepared
    # statements on the pool, and DATABASE_DIRECT_URL is required.
    database_pooler: Literal["none", "transaction"] = Field(
        "none", validation_alias=_env("ORCH_DATABASE_POOLER")
    )
    # The longest a request or a worker waits for a pool connection (a free one, or a new one).
    db_acquire_timeout_s: PositiveFloat = Field(
        2, validation_alias=_env("ORCH_DB_ACQUIRE_TIMEOUT_S")
    )
    # The longest a new connection may take to open (TCP, TLS, authentication).
    db_connect_timeout_s: PositiveFloat = Field(
        2, validation_alias=_env("ORCH_DB_CONNECT_TIMEOUT_S")
    )

    # Completion callbacks (issue 12): signed per Standard Webhooks with this whsec_ secret.
    callback_secret: SecretStr | None = Field(None, validation_alias=_env("ORCH_CALLBACK_SECRET"))
    # Where callbacks may go (issue 16, SSRF): `host` (its scheme's default port), `host:port`
    # ([v6]:port), or `*` for any host whose addresses are all public (domain/destinations.py).
    # Required with ORCH_CALLBACK_SECRET; stored in canonical form.
    callback_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("ORCH_CALLBACK_HOSTS")
    )
    callback_timeout_s: PositiveFloat = Field(5, validation_alias=_env("ORCH_CALLBACK_TIMEOUT_S"))
    callback_retry_for_s: PositiveFloat = Field(
        86_400, validation_alias=_env("ORCH_CALLBACK_RETRY_FOR_S")
    )
    callback_poll_s: PositiveFloat = Field(1.0, validation_alias=_env("ORCH_CALLBACK_POLL_S"))

    # Crash recovery (issue 17): how often every instance looks for owners of leased rows
    # whose owner lock is free, and how long one must be seen so before its rows are requeued.
    owner_check_s: PositiveFloat = Field(2.0, validation_alias=_env("ORCH_OWNER_CHECK_S"))
    owner_grace_s: NonNegativeFloat = Field(5.0, validation_alias=_env("ORCH_OWNER_GRACE_S"))

    # Tokens, sessions and who acted (issue 16, items 4-6; grammar in orchestrator/tokens.py).
    # Names unnamed tokens (an HMAC under it); every instance must have the same.
    secret_key: SecretStr | None = Field(None, validation_alias=_env("ORCH_SECRET_KEY"))
    # The address clients use; https:// makes the dashboard's cookie Secure and adds HSTS.
    public_url: str | None = Field(None, validation_alias=_env("ORCH_PUBLIC_URL"))
    # Proxies (addresses or networks) whose X-Forwarded-Proto is believed.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("ORCH_TRUSTED_PROXIES")
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, tuple):
            for proxy in value:
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ValueError(f"{proxy!r} is not an IP address or network") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return _check_url(value or None)

    @field_validator("secret_key")
    @classmethod
    def _long_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < grammar.MIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {grammar.MIN_TOKEN_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _tokens_parse(self) -> Settings:
        self.tokens()  # a ValueError names ORCH_API_TOKENS, never a token
        return self

    def tokens(self) -> list[grammar.TokenSpec]:
        """ORCH_API_TOKENS, parsed (orchestrator/tokens.py says the grammar)."""
        key = self.secret_key.get_secret_value() if self.secret_key else None
        return grammar.parse(tuple(t.get_secret_value() for t in self.api_tokens), key)

    def behind_tls(self) -> bool:
        """Clients reach the service over https (ORCH_PUBLIC_URL says so)."""
        return bool(self.public_url and self.public_url.startswith("https://"))

    # Smaller hardening (issue 16 item 7): long-poll cap, Host check, the scraper's token.
    # Long polls waiting at once in this process; beyond it, 429 with Retry-After.
    max_long_polls: PositiveInt = Field(1000, validation_alias=_env("ORCH_MAX_LONG_POLLS"))
    # Host header values the service answers (name or name:port; `*` any); empty: loopback
    # names when bound to loopback, any host otherwise (allowed_host_names()).
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("ORCH_ALLOWED_HOSTS")
    )
    # A token only for /metrics, /readyz's details and /openapi.json (a Prometheus scraper).
    metrics_token: SecretStr | None = Field(None, validation_alias=_env("ORCH_METRICS_TOKEN"))

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(token.strip() for token in value.split(",") if token.strip())
        return value

    @field_validator("callback_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return CallbackHosts.parse(value.split(",")).entries()
        if isinstance(value, list | tuple):
            return CallbackHosts.parse(str(entry) for entry in value).entries()
        return value

    @model_validator(mode="after")
    def _callbacks_need_hosts(self) -> Settings:
        """Without a list, any caller with an enqueue token could aim the service anywhere:
        a secret alone does not turn callbacks on."""
        if self.callback_secret is not None and not self.callback_hosts:
            raise ValueError(
                "ORCH_CALLBACK_HOSTS: required when ORCH_CALLBACK_SECRET is set: list the"
                " receivers (host or host:port, comma-separated), or * for any host whose"
                " addresses are all public"
            )
        return self

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_allowed_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(host.strip().lower() for host in value.split(",") if host.strip())
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (openssl rand -hex 32)")
        return value

    def allowed_host_names(self) -> frozenset[str] | None:
        """The Host values requests may carry (`host_allowed` reads them), or None for any:
        ORCH_ALLOWED_HOSTS if set (`*` is any); bound to loopback, the loopback names;
        bound beyond it, any (the service cannot know the name it is reached by; tokens
        protect it there, and compose lists its names)."""
        if self.allowed_hosts:
            return None if "*" in self.allowed_hosts else frozenset(self.allowed_hosts)
        if is_loopback(self.host):
            return LOOPBACK_HOST_NAMES
        return None

    @field_validator("callback_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_webhook_secret(value.get_secret_value())
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("dropbox_sign_base_url", "truto_base_url", "aptly_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @model_validator(mode="after")
    def _https_providers(self) -> Settings:
        for field in ("dropbox_sign_base_url", "truto_base_url", "aptly_base_url"):
            problem = insecure_url(getattr(self, field), self.allow_http_providers)
            if problem:
                raise ValueError(f"{_variable_name(field)}: {problem}")
        return self

    @model_validator(mode="after")
    def _pooler_needs_a_direct_url(self) -> Settings:
        """Through a transaction pooler LISTEN hears nothing and a session lock is held by
        nobody in particular: start-up stops rather than run with long polls that never wake."""
        if self.database_pooler == "transaction" and self.database_direct_url is None:
            raise ValueError(
                "DATABASE_DIRECT_URL: required when ORCH_DATABASE_POOLER=transaction (LISTEN,"
                " advisory locks and migrations need a direct connection to PostgreSQL)"
            )
        if self.db_connect_timeout_s > self.db_acquire_timeout_s:
            raise ValueError(
                "ORCH_DB_CONNECT_TIMEOUT_S: longer than ORCH_DB_ACQUIRE_TIMEOUT_S, so a slow"
                " connection would be abandoned before it could open, every time"
            )
        return self

    def open_to_the_network_without_auth(self) -> bool:
        """True when `serve` must refuse to start: reachable beyond loopback, no token."""
        return not self.api_tokens and not is_loopback(self.host) and not self.allow_no_auth

    def accounts(self) -> list[AccountSettings]:
        """Every configured account: one per provider from the variables above, then the
        accounts of ORCH_CONFIG (a TOML file), whose secrets come from the variables it names."""
        accounts = [
            AccountSettings(
                provider="dropbox_sign",
                name="default",
                base_url=self.dropbox_sign_base_url,
                secret=self.dropbox_sign_api_key,
                rate_limit_per_min=self.dropbox_sign_rate_limit_per_min,
            ),
            AccountSettings(
                provider="truto",
                name="default",
                base_url=self.truto_base_url,
                secret=self.truto_api_token,
                webhook_secret=self.truto_webhook_secret,
                rate_limit_per_min=self.truto_rate_limit_per_min,
            ),
            AccountSettings(
                provider="aptly",
                name="default",
                base_url=self.aptly_base_url,
                secret=self.aptly_token,
                rate_limit_per_min=self.aptly_rate_limit_per_min,
            ),
        ]
        if self.accounts_file is not None:
            extra = read_accounts_file(self.accounts_file)
            for account in extra:
                problem = insecure_url(account.base_url, self.allow_http_providers)
                if problem:
                    raise ConfigError(
                        f"ORCH_CONFIG: account {account.name!r} of {account.provider}:"
                        f" base_url {problem}"
                    )
            accounts = _merge(accounts, extra)
        return accounts


def check_webhook_secret(secret: str) -> None:
    """The Standard Webhooks form: `whsec_` and the base64 of 24 to 64 random bytes. The
    message never repeats the secret."""
    body = secret.removeprefix("whsec_")
    if body == secret:
        raise ValueError("must be whsec_ followed by base64 (the Standard Webhooks form)")
    try:
        key = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not valid base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key must be 24 to 64 bytes, found {len(key)}")


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def insecure_url(url: str | None, allow_http: bool) -> str | None:
    """Why a provider base URL may not be used, or None: credentials travel in every call, so
    plain http is for loopback (the simulators) or an explicit ORCH_ALLOW_HTTP_PROVIDERS."""
    if url is None or allow_http or not url.startswith("http://"):
        return None
    if is_loopback(urlsplit(url).hostname):
        return None
    return "must be https:// (plain http only on loopback, or set ORCH_ALLOW_HTTP_PROVIDERS=true)"


class AccountSettings(BaseModel):
    """One account at one provider. Secrets are read from the environment, never the file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str | None = None
    secret: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    rate_limit_per_min: PositiveFloat | None = None
    account_id: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_url(value)


class _FileAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str | None = None
    secret_env: str | None = None
    webhook_secret_env: str | None = None
    rate_limit_per_min: PositiveFloat | None = None
    account_id: str | None = None


class _AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[_FileAccount] = Field(default_factory=list)


def read_accounts_file(path: Path) -> list[AccountSettings]:
    try:
        data = tomllib.loads(path.read_text())
        parsed = _AccountsFile.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"ORCH_CONFIG: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"ORCH_CONFIG: {path} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"ORCH_CONFIG: {path}: {where}") from None
    accounts = []
    for entry in parsed.accounts:
        try:
            accounts.append(
                AccountSettings(
                    provider=entry.provider,
                    name=entry.name,
                    base_url=entry.base_url,
                    secret=_secret_from_env(entry.secret_env),
                    webhook_secret=_secret_from_env(entry.webhook_secret_env),
                    rate_limit_per_min=entry.rate_limit_per_min,
                    account_id=entry.account_id,
                )
            )
        except ValidationError as exc:
            raise ConfigError(
                f"ORCH_CONFIG: account {entry.name!r}: {exc.errors()[0]['msg']}"
            ) from None
    return accounts


def _secret_from_env(variable: str | None) -> SecretStr | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"{variable}: not set (named by ORCH_CONFIG)")
    return SecretStr(value)


def _merge(base: list[AccountSettings], extra: list[AccountSettings]) -> list[AccountSettings]:
    """Accounts from the file replace the environment's account of the same provider and name."""
    merged = {(a.provider, a.name): a for a in base}
    seen: set[tuple[str, str]] = set()
    for account in extra:
        key = (account.provider, account.name)
        if key in seen:
            raise ConfigError(f"ORCH_CONFIG: account {account.name!r} of {account.provider} twice")
        seen.add(key)
        merged[key] = account
    return list(merged.values())


def _variable_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


class ClientSettings(BaseSettings):
    """What the command-line client (`orchestrator enqueue | status | list | retry`) reads:
    where the service is and the token to show it; none of the service's own settings."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    url: str = Field("http://127.0.0.1:8080", validation_alias=_env("ORCH_URL"))
    token: SecretStr | None = Field(None, validation_alias=_env("ORCH_TOKEN"))

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        checked = _check_url(value)
        assert checked is not None
        return checked

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


def load_client_settings() -> ClientSettings:
    try:
        return ClientSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = {"url": "ORCH_URL", "token": "ORCH_TOKEN"}.get(str(error["loc"][0]), "?")
        raise ConfigError(f"{name}: {error['msg']}") from None


def load_settings(**overrides: object) -> Settings:
    """Read the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a check across fields; its message names the variable
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            problems.append(f"{_variable_name(str(error['loc'][0]))}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
