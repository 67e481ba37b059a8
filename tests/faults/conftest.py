"""The in-process `harness` of tests/integration (service over loopback HTTP, stepped by the
test), for the fault tests that need no separate process."""

from __future__ import annotations

from tests.integration.conftest import harness, settings_overrides, sim_server

__all__ = ["harness", "settings_overrides", "sim_server"]
