"""Load the named statements of queries.sql (procrastinate's layout: `-- name: x` headers)."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


def load() -> dict[str, str]:
    return parse(resources.files("orchestrator.store").joinpath("queries.sql").read_text())


QUERIES = load()
