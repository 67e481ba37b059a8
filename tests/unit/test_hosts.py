"""Which Host names the service answers to (ORCH_ALLOWED_HOSTS), and the settings of issue
16's smaller items: the long-poll cap and the scraper's token."""

from __future__ import annotations

import pytest

from orchestrator.config import LOOPBACK_HOST_NAMES, ConfigError, host_allowed, load_settings


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("127.0.0.1", True),
        ("localhost:41234", True),
        ("LocalHost.:80", True),
        ("[::1]:8080", True),
        ("[::1]", True),
        ("evil.example", False),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example:8080", False),
        ("127.0.0.2:8080", False),
        ("", False),
    ],
)
def test_bound_to_loopback_only_loopback_names_are_answered(host: str, allowed: bool) -> None:
    settings = load_settings(host="127.0.0.1")
    assert settings.allowed_host_names() == LOOPBACK_HOST_NAMES
    assert host_allowed(host, settings.allowed_host_names()) is allowed


def test_a_listed_name_matches_any_port_and_a_listed_name_port_only_that_port() -> None:
    names = load_settings(allowed_hosts="Orchestrator.Example, api.example:8443")
    allowed = names.allowed_host_names()
    assert host_allowed("orchestrator.example:9", allowed)
    assert host_allowed("api.example:8443", allowed)
    assert not host_allowed("api.example:8444", allowed)
    assert not host_allowed("api.example", allowed)
    assert not host_allowed("127.0.0.1:8080", allowed)  # the list replaces the loopback names


def test_a_star_allows_any_host_and_beyond_loopback_without_a_list_any_host_is_answered() -> None:
    assert load_settings(allowed_hosts="*").allowed_host_names() is None
    beyond = load_settings(host="0.0.0.0", api_tokens="t" * 40 + ";name=ops")
    assert beyond.allowed_host_names() is None
    assert host_allowed("evil.example", beyond.allowed_host_names())


def test_the_long_poll_cap_and_the_metrics_token_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().max_long_polls == 1000
    monkeypatch.setenv("ORCH_MAX_LONG_POLLS", "2")
    monkeypatch.setenv("ORCH_METRICS_TOKEN", "m" * 40)
    settings = load_settings()
    assert settings.max_long_polls == 2
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == "m" * 40
    assert "m" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ORCH_METRICS_TOKEN", "m" * 31), ("ORCH_MAX_LONG_POLLS", "0")],
)
def test_a_short_metrics_token_or_no_long_polls_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value)
    assert value not in str(caught.value) or variable == "ORCH_MAX_LONG_POLLS"
