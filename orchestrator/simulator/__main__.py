"""``python -m orchestrator.simulator --port 9000``: serve all three providers until Ctrl-C.

Prints the environment to give the orchestrator, so a demo is two terminals and a paste.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.aptly import AptlySettings
from orchestrator.simulator.dropbox_sign import DropboxSignSettings
from orchestrator.simulator.faults import ConfigError, Faults
from orchestrator.simulator.hub import Simulator
from orchestrator.simulator.truto import TrutoSettings


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.simulator",
        description="Serve Dropbox Sign, Truto and Aptly stand-ins on one port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault dice")
    parser.add_argument("--callback-url", default=None, help="where Dropbox Sign events go")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "any setting or fault, VALUE as JSON (e.g. --set error_5xx_rate=0.1), or as written"
            " for text settings (--set raw_retry_after=1e300); repeatable"
        ),
    )
    return parser.parse_args(argv)


def _text_settings() -> frozenset[str]:
    """Settings typed ``str``: their VALUE is taken as written, so ``raw_retry_after=1e300``
    stays the string a 429 should carry instead of becoming a float (``null`` unsets)."""
    classes = (Faults, DropboxSignSettings, TrutoSettings, AptlySettings)
    return frozenset(
        f.name
        for cls in classes
        for f in dataclasses.fields(cls)
        if f.init and "str" in str(f.type).split(" | ")
    )


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.callback_url is not None:
        changes["callback_url"] = args.callback_url
    text = _text_settings()
    for item in args.set:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set wants NAME=VALUE, got {item!r}")
        if name in text:
            changes[name] = None if raw == "null" else raw
            continue
        try:
            changes[name] = json.loads(raw)
        except ValueError:
            changes[name] = raw
    return changes


async def _serve(args: argparse.Namespace) -> None:
    simulator = Simulator()
    simulator.configure(_changes(args))
    server = SimulatorServer(simulator, host=args.host, port=args.port)
    await server.start()
    try:
        print(
            f"provider simulator on {server.url} (control plane: {server.url}/_sim/stats)",
            flush=True,
        )
        for name, value in server.env().items():
            print(f"{name}={value}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        asyncio.run(_serve(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
