"""`orchestrator enqueue | status | list | retry`: the API from the command line.

Talks to a running service over HTTP (orchestrator.client); reads ORCH_URL and ORCH_TOKEN
and none of the service's settings. Tables by default, `--json` for scripts; an error
prints the problem's detail on stderr and exits 1 (2 for a bad setting or argument).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from orchestrator.client import ApiError, Client
from orchestrator.config import ClientSettings, ConfigError, load_client_settings
from orchestrator.domain.model import ProviderName, Status

COMMANDS = ("enqueue", "status", "list", "retry")

#: `status --follow` exits with this when the cancellation ends failed.
FAILED_EXIT = 3


def add_commands(sub: Any) -> None:
    """The client's subcommands, on the CLI's subparsers."""
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="JSON for scripts, no table")
    providers = [p.value for p in ProviderName]

    enqueue = sub.add_parser(
        "enqueue", parents=[json_flag], help="ask the service (ORCH_URL) to cancel a request"
    )
    enqueue.add_argument("resource_id", metavar="RESOURCE", help="the provider's request id")
    enqueue.add_argument("--provider", required=True, choices=providers)
    enqueue.add_argument("--account", default=None, help="a configured account (default)")
    enqueue.add_argument("--reason", default=None)
    enqueue.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a provider param; VALUE is read as JSON when it parses, else as a string",
    )
    enqueue.add_argument("--idempotency-key", default=None)

    status = sub.add_parser("status", parents=[json_flag], help="one cancellation's state")
    status.add_argument("id", type=uuid.UUID, metavar="ID")
    status.add_argument(
        "--follow",
        action="store_true",
        help="print each change (long polling) until it ends; exit 3 if it ends failed",
    )

    listing = sub.add_parser("list", parents=[json_flag], help="cancellations, newest first")
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--provider", choices=providers)
    listing.add_argument("--resource-id", default=None)
    listing.add_argument("--limit", type=int, default=None, help="1-200 (default 50)")
    listing.add_argument("--after", default=None, help="the `next` cursor of a previous page")

    retry = sub.add_parser(
        "retry", parents=[json_flag], help="retry now, checking the provider first (admin)"
    )
    retry.add_argument("id", type=uuid.UUID, metavar="ID")
    retry.add_argument("--reason", required=True, help="why, kept in the history")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_client_settings()
        body = _enqueue_body(args) if args.command == "enqueue" else None
    except ConfigError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings, body))
    except ApiError as exc:
        print("orchestrator: " + "\n".join(exc.lines()), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run(
    args: argparse.Namespace, settings: ClientSettings, body: dict[str, Any] | None
) -> int:
    out = Output(args.json)
    async with Client(settings) as client:
        if args.command == "enqueue":
            assert body is not None
            answer = await client.enqueue(body, args.idempotency_key)
            out.cancellation(answer.body, "created" if answer.status == 202 else "existing")
            return 0
        if args.command == "status" and args.follow:
            last: dict[str, Any] = {}
            async for state in client.follow(args.id):
                out.cancellation(state, None, follow=True)
                last = state
            return FAILED_EXIT if last.get("status") == Status.FAILED else 0
        if args.command == "status":
            out.cancellation((await client.get(args.id)).body, None)
            return 0
        if args.command == "list":
            query = {
                name: str(value)
                for name in ("status", "provider", "resource_id", "limit", "after")
                if (value := getattr(args, name)) is not None
            }
            out.page((await client.list(query)).body)
            return 0
        out.cancellation((await client.retry(args.id, args.reason)).body, "retrying")
        return 0


def _enqueue_body(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in args.param:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {pair!r}: write KEY=VALUE")
        try:
            params[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            params[key] = value
    body: dict[str, Any] = {"provider": args.provider, "resource_id": args.resource_id}
    for name in ("account", "reason"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if params:
        body["params"] = params
    return body


class Output:
    """Tables for people, JSON for scripts (one object per line when following)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # Piped, rich would assume 80 columns and shorten the ids; a terminal has its own width.
        width = None if sys.stdout.isatty() else 200
        self.console = Console(highlight=False, width=width)

    def _json(self, data: Any) -> None:
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
        sys.stdout.flush()

    def cancellation(self, data: dict[str, Any], note: str | None, follow: bool = False) -> None:
        if self.as_json:
            self._json(data)
            return
        if follow:
            error = (data.get("last_error") or {}).get("message")
            line = f"{data['updated_at']}  {data['status']}"
            line += f"  attempts={data['attempts']}"
            if data.get("outcome"):
                line += f"  outcome={data['outcome']}"
            if error:
                line += f"  error={error}"
            self.console.print(line)
            return
        table = Table(show_header=False, title=note)
        table.add_column("field", style="bold")
        table.add_column("value")
        for key in (
            "id",
            "provider",
            "account",
            "resource_id",
            "status",
            "outcome",
            "confirmed_via",
            "attempts",
            "reason",
            "created_at",
            "updated_at",
            "next_attempt_at",
            "confirmed_at",
        ):
            if data.get(key) is not None:
                table.add_row(key, str(data[key]))
        if data.get("last_error"):
            error = data["last_error"]
            table.add_row("last_error", f"{error.get('code')}: {error.get('message')}")
        self.console.print(table)

    def page(self, data: dict[str, Any]) -> None:
        if self.as_json:
            self._json(data)
            return
        table = Table()
        for column in ("id", "provider", "resource_id", "status", "attempts", "updated_at"):
            table.add_column(column, no_wrap=column == "id")
        for item in data["items"]:
            table.add_row(
                item["id"],
                item["provider"],
                item["resource_id"],
                item["status"],
                str(item["attempts"]),
                item["updated_at"],
            )
        self.console.print(table)
        if data.get("next"):
            self.console.print(f"more: --after {data['next']}")
