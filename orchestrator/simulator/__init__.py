"""Stand-ins for the providers' internet endpoints (Dropbox Sign, Truto, Aptly).

Real HTTP servers with injectable faults, for the tests, the demo and the benchmarks.
Nothing here imports the rest of the orchestrator: the simulator plays the outside world.
"""

from __future__ import annotations

from orchestrator.simulator.app import BASE_PATHS, SimulatorServer, create_app
from orchestrator.simulator.aptly import AptlySettings, AptlySimulator
from orchestrator.simulator.base import ProviderSimulator
from orchestrator.simulator.dropbox_sign import (
    ACK_TEXT,
    DropboxSignSettings,
    DropboxSignSimulator,
    event_hash,
)
from orchestrator.simulator.faults import ConfigError, Faults
from orchestrator.simulator.hub import Simulator, UnknownProvider
from orchestrator.simulator.records import STATES
from orchestrator.simulator.truto import TrutoSettings, TrutoSimulator

__all__ = [
    "ACK_TEXT",
    "BASE_PATHS",
    "STATES",
    "AptlySettings",
    "AptlySimulator",
    "ConfigError",
    "DropboxSignSettings",
    "DropboxSignSimulator",
    "Faults",
    "ProviderSimulator",
    "Simulator",
    "SimulatorServer",
    "TrutoSettings",
    "TrutoSimulator",
    "UnknownProvider",
    "create_app",
    "event_hash",
]
