"""The faults a client of the providers must survive, at every provider: rate limits and
absurd wait hints, 5xx, resets before and after a cancel lands, slow answers, redirects.
"""

from __future__ import annotations

import time

import aiohttp
import pytest

from orchestrator.simulator import ConfigError, Faults, Simulator, SimulatorServer
from tests.simulator.support import (
    APTLY,
    DS_AUTH,
    TRUTO,
    TRUTO_WORKFLOWS,
    Call,
    Receiver,
    cancel_call,
    eventually,
)


async def test_rate_limit_per_account(server: SimulatorServer, sim: Simulator, call: Call) -> None:
    sim.configure({"dropbox_sign": {"rate_limit_per_min": 2}})
    url = f"{server.dropbox_sign_url}/signature_request/rl"
    before = time.time()
    for _ in range(2):
        assert (await call("GET", url, headers=DS_AUTH))[0] == 200
    status, body, headers = await call("GET", url, headers=DS_AUTH)
    assert status == 429
    assert body == {"error": {"error_msg": "Rate limit exceeded", "error_name": "exceeded_rate"}}
    assert headers["X-RateLimit-Limit"] == "2"
    assert headers["X-RateLimit-Remaining"] == "0"
    reset = int(headers["X-Ratelimit-Reset"])
    assert before + 59 <= reset <= time.time() + 61
    assert (await call("GET", url, headers=DS_AUTH))[0] == 429
    ds = sim.dropbox_sign
    assert ds.counters.calls_before_reset == 1
    [window] = ds.limit_windows[:1]
    assert window.until == reset
    assert len(ds.call_times("sim-account")) == 4
    assert [t for t in ds.call_times("sim-account") if window.start < t < window.until]


async def test_forced_429_over_the_control_plane(server: SimulatorServer, call: Call) -> None:
    status, config, _ = await call(
        "PATCH", f"{server.url}/_sim/faults", json={"rate_429": 1.0, "retry_after_s": 0}
    )
    assert status == 200 and config["truto"]["rate_429"] == 1.0
    status, _, headers = await call(
        "POST", f"{server.dropbox_sign_url}/signature_request/cancel/x", headers=DS_AUTH
    )
    assert status == 429 and int(headers["X-Ratelimit-Reset"]) >= int(time.time())
    status, body, headers = await call(
        "POST",
        f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia",
        headers=TRUTO,
        json={"id": "w", "message": "m"},
    )
    assert status == 429
    assert body == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Rate limit exceeded",
    }
    assert (headers["ratelimit-remaining"], headers["ratelimit-reset"]) == ("0", "0")
    assert "ratelimit-limit" in headers
    status, body, headers = await call(
        "PATCH", f"{server.aptly_url}/v1/actions/a/cancel-action", headers=APTLY, json={}
    )
    assert status == 429 and headers["Retry-After"] == "0" and body["statusCode"] == 429


async def test_5xx_fault_uses_each_providers_error_shape(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.configure({"error_5xx_rate": 1.0})
    status, body, _ = await call(
        "POST", f"{server.dropbox_sign_url}/signature_request/cancel/x", headers=DS_AUTH
    )
    assert status in (500, 502, 503) and set(body["error"]) == {"error_msg", "error_name"}
    status, body, _ = await call(
        "POST",
        f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia",
        headers=TRUTO,
        json={"id": "w", "message": "m"},
    )
    assert status in (500, 502, 503) and body["statusCode"] == status
    status, body, _ = await call(
        "PATCH", f"{server.aptly_url}/v1/actions/a/cancel-action", headers=APTLY, json={}
    )
    assert status in (500, 502, 503) and body["statusCode"] == status and "timestamp" in body
    assert sim.dropbox_sign.state_of("x") == "open"


async def test_reset_fault_is_a_connection_error(server: SimulatorServer, sim: Simulator) -> None:
    sim.configure({"reset_rate": 1.0})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.post(
                f"{server.dropbox_sign_url}/signature_request/cancel/x", headers=DS_AUTH
            )
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.patch(
                f"{server.aptly_url}/v1/actions/a/cancel-action", headers=APTLY, json={}
            )
    assert sim.dropbox_sign.counters.injected_resets == 1
    assert sim.dropbox_sign.calls[-1].status == 0


async def test_slow_fault_outlasts_a_client_timeout(
    server: SimulatorServer, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.configure({"slow_rate": 1.0, "slow_s": 0.3})
    with pytest.raises(TimeoutError):
        await http.post(
            f"{server.dropbox_sign_url}/signature_request/cancel/slow",
            headers=DS_AUTH,
            timeout=aiohttp.ClientTimeout(total=0.05),
        )
    # The provider still acts on a call its client gave up on.
    await eventually(lambda: sim.dropbox_sign.state_of("slow") in ("canceling", "canceled"))


@pytest.mark.parametrize("provider", ["dropbox_sign", "truto", "aptly"])
async def test_redirect_fault_sends_callers_to_a_page_that_says_200(
    server: SimulatorServer, sim: Simulator, http: aiohttp.ClientSession, provider: str
) -> None:
    sim.configure({provider: {"redirect_rate": 1.0}})
    kwargs = cancel_call(server, provider, "moved")
    async with http.request(**kwargs, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location == f"{server.url}/_sim/redirected/{provider}"
    async with http.request(**kwargs) as response:  # following, as aiohttp does by default
        assert (response.status, await response.json()) == (200, {})
        assert response.history[0].status == 302
        # aiohttp turns a POST into a GET on 302 (and keeps a PATCH): either way, 200.
        assert response.method == ("PATCH" if provider == "aptly" else "GET")
    target = sim.provider(provider)
    assert target.state_of("moved") == "open"
    assert (target.counters.injected_redirects, target.counters.redirects_followed) == (2, 1)
    assert [c.status for c in target.calls] == [302, 302]


async def test_redirect_status_is_configurable_and_must_be_3xx(
    server: SimulatorServer, sim: Simulator, http: aiohttp.ClientSession, call: Call
) -> None:
    status, config, _ = await call(
        "PATCH", f"{server.url}/_sim/faults", json={"redirect_rate": 1.0, "redirect_status": 307}
    )
    assert status == 200 and config["aptly"]["redirect_status"] == 307
    async with http.request(**cancel_call(server, "aptly", "a")) as response:
        assert (response.status, response.method) == (200, "PATCH")  # 307 keeps the method
        assert response.history[0].status == 307
    for bad in (200, 404, "302"):
        status, body, _ = await call(
            "PATCH", f"{server.url}/_sim/faults", json={"redirect_status": bad}
        )
        assert status == 400 and "redirect_status" in body["error"]
    assert (await call("GET", f"{server.url}/_sim/redirected/nope"))[0] == 404


async def test_raw_wait_hints_replace_the_computed_ones(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    year_5000 = "95617584000"
    status, _, _ = await call(
        "PATCH",
        f"{server.url}/_sim/faults",
        json={"rate_429": 1.0, "raw_retry_after": "1e300", "raw_ratelimit_reset": year_5000},
    )
    assert status == 200
    answers = {}
    for provider in ("dropbox_sign", "truto", "aptly"):
        kwargs = cancel_call(server, provider, "w")
        status, _, headers = await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs)
        assert status == 429
        answers[provider] = headers
    assert answers["dropbox_sign"]["Retry-After"] == "1e300"
    assert answers["dropbox_sign"]["X-Ratelimit-Reset"] == year_5000
    assert answers["truto"]["Retry-After"] == "1e300"
    assert answers["truto"]["ratelimit-reset"] == year_5000
    assert answers["aptly"]["Retry-After"] == "1e300"  # Aptly has no reset header

    sim.configure({"raw_retry_after": "inf", "raw_ratelimit_reset": "-5"})
    kwargs = cancel_call(server, "truto", "w")
    _, _, headers = await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs)
    assert (headers["Retry-After"], headers["ratelimit-reset"]) == ("inf", "-5")

    sim.configure({"raw_retry_after": None, "raw_ratelimit_reset": None, "retry_after_s": 3})
    kwargs = cancel_call(server, "truto", "w")
    _, _, headers = await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs)
    assert "Retry-After" not in headers and headers["ratelimit-reset"] == "3"
    for bad in ({"raw_retry_after": "1\r\nX-Evil: 1"}, {"raw_ratelimit_reset": 5}):
        assert (await call("PATCH", f"{server.url}/_sim/faults", json=bad))[0] == 400


async def test_status_5xx_fault_spares_the_cancels(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.configure({"status_5xx_rate": 1.0})
    ds_status = f"{server.dropbox_sign_url}/signature_request/s5"
    truto_read = f"{server.truto_url}{TRUTO_WORKFLOWS}/s5?integrated_account_id=ia"
    status, body, _ = await call("GET", ds_status, headers=DS_AUTH)
    assert status in (500, 502, 503) and set(body["error"]) == {"error_msg", "error_name"}
    status, body, _ = await call("GET", truto_read, headers=TRUTO)
    assert status in (500, 502, 503) and body["statusCode"] == status
    for provider in ("dropbox_sign", "truto", "aptly"):
        kwargs = cancel_call(server, provider, "s5")
        assert (await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs))[0] == 200
    assert sim.dropbox_sign.counters.injected_status_5xx == 1
    assert sim.truto.counters.injected_status_5xx == 1
    assert sim.truto.state_of("s5") == "canceled"


@pytest.mark.parametrize(
    ("provider", "landed"),
    [
        ("dropbox_sign", ("canceling", "canceled")),
        ("truto", ("canceled",)),
        ("aptly", ("canceled",)),
    ],
)
async def test_reset_after_cancel_lands_the_cancel_but_loses_the_answer(
    server: SimulatorServer,
    sim: Simulator,
    http: aiohttp.ClientSession,
    provider: str,
    landed: tuple[str, ...],
) -> None:
    sim.configure({provider: {"reset_after_cancel_rate": 1.0}})
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.request(**cancel_call(server, provider, "landed")):
            pass
    target = sim.provider(provider)
    assert target.state_of("landed") in landed
    assert target.counters.resets_after_cancel == 1
    assert [c.status for c in target.calls] == [0]
    assert target.stats()["responses"] == {}


@pytest.mark.parametrize("provider", ["dropbox_sign", "truto", "aptly"])
async def test_5xx_after_cancel_lands_the_cancel_but_answers_an_error(
    server: SimulatorServer, sim: Simulator, call: Call, provider: str
) -> None:
    sim.configure({provider: {"error_5xx_after_cancel_rate": 1.0}})
    status, body, _ = await call(**cancel_call(server, provider, "landed"))
    assert status in (500, 502, 503) and body
    target = sim.provider(provider)
    assert target.state_of("landed") in ("canceling", "canceled")
    assert target.counters.errors_after_cancel == 1
    assert [c.status for c in target.calls] == [status]


async def test_reset_after_cancel_spares_status_checks(
    server: SimulatorServer, sim: Simulator, call: Call, receiver: Receiver
) -> None:
    sim.configure({"reset_after_cancel_rate": 1.0})
    status, _, _ = await call(
        "GET", f"{server.dropbox_sign_url}/signature_request/r", headers=DS_AUTH
    )
    assert status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(**cancel_call(server, "dropbox_sign", "r"))
    [got] = await receiver.wait_for(1)  # the provider went on and confirmed it
    assert got.payload["event"]["event_type"] == "signature_request_canceled"


def test_faults_are_reproducible_and_validated() -> None:
    one, two = Faults(seed=3, error_5xx_rate=0.5), Faults(seed=3, error_5xx_rate=0.5)
    one.bind("dropbox_sign")
    two.bind("dropbox_sign")
    assert [one.chance("error_5xx_rate") for _ in range(50)] == [
        two.chance("error_5xx_rate") for _ in range(50)
    ]
    with pytest.raises(ConfigError):
        Faults(drop_callback_rate=1.5)
    with pytest.raises(ConfigError):
        one.update({"slow_s": "soon"})
    sim = Simulator()
    with pytest.raises(ConfigError):
        sim.configure({"truto": {"callback_url": "http://x"}})
    sim.configure({"seed": 5, "aptly": {"seed": 6}})
    assert (sim.truto.faults.seed, sim.aptly.faults.seed) == (5, 6)
