"""Top functions of a py-spy profile (`--format raw`: collapsed stacks, one per line).

.venv/bin/python bench/profile_summary.py service-e2e.pyspy.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
_SITE = re.compile(r".*/(site-packages|lib/python3\.\d+)/")


def _name(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `module.py:func`, paths shortened, lines dropped."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = _SITE.sub("", match["file"]).replace("/work/main/", "")
    return f"{path}:{match['func']}"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
        by_area[_area(frames)] += n
    return {
        "samples": total,
        "self": [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)],
        "inclusive": [
            (name, round(100 * n / total, 1)) for name, n in inclusive.most_common(top * 2)
        ],
        "areas": [(name, round(100 * n / total, 1)) for name, n in by_area.most_common()],
    }


# What a sample was doing, judged by the innermost frame we recognise (first match wins).
_AREAS = (
    ("json / pydantic", ("orjson", "pydantic", "json/")),
    ("webhook parse (email.parser)", ("email/",)),
    ("logging", ("logging/",)),
    ("tenacity", ("tenacity/",)),
    ("asyncpg", ("asyncpg/",)),
    ("aiohttp client", ("aiohttp/client", "aiohttp/connector")),
    ("aiohttp server", ("aiohttp/web", "aiohttp/http")),
    ("orchestrator", ("orchestrator/",)),
    ("asyncio", ("asyncio/",)),
)


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, needles in _AREAS:
            if any(needle in frame for needle in needles):
                return area
    return "other"


def print_summary(console: Console, name: str, summary: dict[str, Any], top: int = 20) -> None:
    console.print(f"\n[bold]{name} profile (py-spy, {summary['samples']:,} samples)[/]")
    views = (("self time", "self"), ("inclusive time", "inclusive"), ("by area", "areas"))
    for title, key in views:
        table = Table(title=title)
        table.add_column("%", justify="right")
        table.add_column("function")
        for name, share in summary[key][:top]:
            table.add_row(f"{share:.1f}", name)
        console.print(table)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    print_summary(Console(), path.name, summarise(path), top=40)
