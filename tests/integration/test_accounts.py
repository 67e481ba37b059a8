"""Several accounts per provider, from an ORCH_CONFIG file whose secrets live in the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator.app import SimulatorServer
from orchestrator.web import keys
from tests.integration.conftest import Harness


@pytest.fixture
def settings_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim_server: SimulatorServer
) -> dict[str, Any]:
    monkeypatch.setenv("EMEA_DROPBOX_SIGN_KEY", sim_server.simulator.dropbox_sign.settings.api_key)
    monkeypatch.setenv("US_DROPBOX_SIGN_KEY", "a-key-the-simulator-does-not-know")
    config = tmp_path / "accounts.toml"
    config.write_text(
        f"""
[[accounts]]
provider = "dropbox_sign"
name = "emea"
base_url = "{sim_server.dropbox_sign_url}"
secret_env = "EMEA_DROPBOX_SIGN_KEY"
account_id = "{sim_server.simulator.dropbox_sign.settings.account_id}"
rate_limit_per_min = 50

[[accounts]]
provider = "dropbox_sign"
name = "us"
base_url = "{sim_server.dropbox_sign_url}"
secret_env = "US_DROPBOX_SIGN_KEY"
account_id = "us-account"
"""
    )
    return {"accounts_file": str(config)}


async def test_accounts_from_the_file_are_used_and_throttled_separately(harness: Harness) -> None:
    accounts = harness.app[keys.ACCOUNTS]
    assert {a.name for a in accounts.for_provider("dropbox_sign")} == {"default", "emea", "us"}
    emea = accounts.get("dropbox_sign", "emea")
    assert emea is not None and emea.rate_limit_per_min == 50
    assert harness.app[keys.DISPATCHER].served()["dropbox_sign:emea"] == 50


async def test_callback_is_verified_against_the_account_that_declares_its_id(
    harness: Harness,
) -> None:
    """Both `default` and `emea` hold the simulator's key; the event names emea's account id,
    so it acts on emea's cancellation (prompts its status check: the default), not on one of
    the same request under `default`."""
    emea = await harness.enqueue("sr-shared", account="emea")
    default = await harness.enqueue("sr-shared")
    assert emea["id"] != default["id"]
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 1.0}})
    await harness.dispatch()
    harness.sim.emit("dropbox_sign", "sr-shared", "signature_request_canceled")
    await harness.provider_idle()
    assert (await harness.get(emea["id"]))["status"] == "queued"
    assert (await harness.events(emea["id"]))[-1]["cause"] == "webhook_needs_check"
    assert (await harness.get(default["id"]))["status"] == "awaiting_confirmation"


async def test_unknown_account_is_refused(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/cancellations",
        json={"provider": "dropbox_sign", "resource_id": "x", "account": "apac"},
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "account"
