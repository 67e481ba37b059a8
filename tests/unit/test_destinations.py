"""Where completion callbacks may go (domain/destinations.py), without the network: the
ORCH_CALLBACK_HOSTS grammar, which URL each list admits, and which addresses are public."""

from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import ConfigError, load_settings
from orchestrator.domain.destinations import CallbackHosts, Verdict, is_public
from tests.unit.test_config import ALIASES

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("127.255.0.9", False),
        ("::1", False),
        ("10.0.0.5", False),
        ("172.16.3.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # the cloud metadata address
        ("169.254.0.1", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("224.0.0.1", False),
        ("ff02::1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("198.18.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:10.0.0.5", False),
        ("::ffff:93.184.215.14", True),  # a mapped public address is that address
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::a00:5", False),  # NAT64 of 10.0.0.5
        ("64:ff9b::7f00:1", False),
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1 (deprecated, reserved)
    ],
)
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    ("entries", "written"),
    [
        ("hooks.example", ("hooks.example",)),
        (" Hooks.Example. , hooks.example ,,", ("hooks.example",)),
        ("hooks.example:8443", ("hooks.example:8443",)),
        ("127.0.0.1:9000, *", ("127.0.0.1:9000", "*")),
        ("[::1]:8080,[::1]", ("[::1]", "[::1]:8080")),
        ("[0:0::1]:8080", ("[::1]:8080",)),
        ("*", ("*",)),
    ],
)
def test_the_host_list_grammar(entries: str, written: tuple[str, ...]) -> None:
    settings = load_settings(callback_secret=SECRET, callback_hosts=entries)
    assert settings.callback_hosts == written


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("https://hooks.example", "no scheme or path"),
        ("hooks.example/x", "no scheme or path"),
        ("hooks.example:0", "1 to 65535"),
        ("hooks.example:http", "1 to 65535"),
        ("::1", "IPv6 address goes in brackets"),
        ("[hooks.example]:80", "IPv6 address goes in brackets"),
        ("*.example", "not a host name"),
        ("*:443", "not a host name"),
    ],
)
def test_a_malformed_entry_stops_start_up_naming_it(entries: str, message: str) -> None:
    with pytest.raises(ConfigError, match="ORCH_CALLBACK_HOSTS") as caught:
        load_settings(callback_secret=SECRET, callback_hosts=f"ok.example, {entries}")
    assert message in str(caught.value)


LISTED = CallbackHosts.parse(["hooks.example", "127.0.0.1:5000", "[::1]:7000", "tls.example:8443"])
ANY = CallbackHosts.parse(["*", "hooks.internal:8080"])


@pytest.mark.parametrize(
    ("hosts", "url", "verdict"),
    [
        (LISTED, "https://hooks.example/done", Verdict.LISTED),
        (LISTED, "http://HOOKS.example./done", Verdict.LISTED),
        (LISTED, "https://hooks.example:443/done", Verdict.LISTED),
        (LISTED, "https://hooks.example:8443/done", Verdict.REFUSED),  # not its default port
        (LISTED, "http://127.0.0.1:5000/x", Verdict.LISTED),
        (LISTED, "http://127.0.0.1:5432/x", Verdict.REFUSED),  # a listed host, another port
        (LISTED, "http://127.0.0.1/x", Verdict.REFUSED),
        (LISTED, "http://[::1]:7000/x", Verdict.LISTED),
        (LISTED, "http://[0::1]:7000/x", Verdict.LISTED),
        (LISTED, "http://[::ffff:127.0.0.1]:5000/x", Verdict.REFUSED),  # not as listed
        (LISTED, "https://tls.example:8443/", Verdict.LISTED),
        (LISTED, "https://evil.example/x", Verdict.REFUSED),
        (ANY, "https://hooks.public.example/x", Verdict.PUBLIC_ONLY),
        (ANY, "http://hooks.internal:8080/x", Verdict.LISTED),
        (ANY, "http://hooks.internal/x", Verdict.PUBLIC_ONLY),  # resolved and checked then
        (ANY, "http://93.184.215.14:8080/x", Verdict.PUBLIC_ONLY),
        (ANY, "http://127.0.0.1:5432/x", Verdict.REFUSED),
        (ANY, "http://localhost/x", Verdict.REFUSED),
        (ANY, "http://api.localhost/x", Verdict.REFUSED),
        (ANY, "http://[::ffff:127.0.0.1]/x", Verdict.REFUSED),
        (ANY, "http://[::1]/x", Verdict.REFUSED),
        (ANY, "http://169.254.169.254/latest/meta-data", Verdict.REFUSED),
        (ANY, "http://10.0.0.5/x", Verdict.REFUSED),
        (ANY, "http://2130706433/x", Verdict.REFUSED),  # 127.0.0.1 as one number
        (ANY, "http://127.1/x", Verdict.REFUSED),
        (ANY, "http://0x7f.1/x", Verdict.REFUSED),
    ],
)
def test_which_url_each_list_admits(hosts: CallbackHosts, url: str, verdict: Verdict) -> None:
    decision = hosts.decide(url)
    assert decision.verdict is verdict
    if verdict is Verdict.REFUSED:
        assert decision.reason


def test_serve_with_a_secret_and_no_hosts_exits_2_naming_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in ALIASES}
    env["ORCH_CALLBACK_SECRET"] = SECRET
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
    assert "ORCH_CALLBACK_HOSTS" in done.stderr
    assert SECRET.removeprefix("whsec_") not in done.stderr
    assert not list(tmp_path.iterdir()), "nothing may start before the settings are valid"
