"""The table printed at the end of a run, and the verdict on each target of issue 6."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

Figures = dict[str, Any]


def _get(results: Figures, *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _fmt(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "-" if value is None else str(value)
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    if abs(number) >= 100:
        return f"{number:.0f}"
    if abs(number) >= 10:
        return f"{number:.1f}"
    return f"{number:.2f}"


def ratio(ours: Any, base: Any) -> float | None:
    a, b = _num(ours), _num(base)
    if a is None or b is None or b == 0:
        return None
    return a / b


# (section, label, path under results[implementation])
ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("enqueue", "requests/s", ("api", "enqueue", "per_s")),
    ("enqueue", "latency p50 ms", ("api", "enqueue", "p50_ms")),
    ("enqueue", "latency p99 ms", ("api", "enqueue", "p99_ms")),
    ("enqueue", "CPU ms / request", ("api", "enqueue", "cpu_ms_per_op")),
    ("enqueue", "Postgres CPU ms / request", ("api", "enqueue", "pg_cpu_ms_per_op")),
    ("enqueue", "DB transactions / request", ("api", "enqueue", "xacts_per_op")),
    ("enqueue", "WAL bytes / request", ("api", "enqueue", "wal_bytes_per_op")),
    ("enqueue", "other load on the machine %", ("api", "enqueue", "other_load_pct")),
    ("batch enqueue", "items / request", ("api", "batch", "batch_size")),
    ("batch enqueue", "requests/s", ("api", "batch", "per_s")),
    ("batch enqueue", "items/s", ("api", "batch", "items_per_s")),
    ("batch enqueue", "latency p50 ms", ("api", "batch", "p50_ms")),
    ("batch enqueue", "latency p99 ms", ("api", "batch", "p99_ms")),
    ("batch enqueue", "CPU ms / item", ("api", "batch", "cpu_ms_per_op")),
    ("batch enqueue", "Postgres CPU ms / item", ("api", "batch", "pg_cpu_ms_per_op")),
    ("batch enqueue", "DB transactions / item", ("api", "batch", "xacts_per_op")),
    ("batch enqueue", "WAL bytes / item", ("api", "batch", "wal_bytes_per_op")),
    ("end to end", "confirmed/s", ("e2e", "confirmed_per_s")),
    ("end to end", "time to confirm p50 ms", ("e2e", "ttc_p50_ms")),
    ("end to end", "time to confirm p99 ms", ("e2e", "ttc_p99_ms")),
    ("end to end", "enqueue p99 ms (under load)", ("e2e", "enqueue", "p99_ms")),
    ("end to end", "CPU s / 1,000 cancels", ("e2e", "cpu_s_per_1000")),
    ("end to end", "Postgres CPU s / 1,000", ("e2e", "pg_cpu_s_per_1000")),
    ("end to end", "peak RSS MB", ("e2e", "peak_rss_mb")),
    ("end to end", "DB transactions / cancel", ("e2e", "xacts_per_cancel")),
    ("end to end", "WAL bytes / cancel", ("e2e", "wal_bytes_per_cancel")),
    ("end to end", "other load on the machine %", ("e2e", "other_load_pct")),
    ("webhook", "callbacks/s", ("api", "webhook", "per_s")),
    ("webhook", "latency p50 ms", ("api", "webhook", "p50_ms")),
    ("webhook", "latency p99 ms", ("api", "webhook", "p99_ms")),
    ("webhook", "CPU ms / callback", ("api", "webhook", "cpu_ms_per_op")),
    ("webhook", "DB transactions / callback", ("api", "webhook", "xacts_per_op")),
    ("webhook", "WAL bytes / callback", ("api", "webhook", "wal_bytes_per_op")),
    ("webhook", "other load on the machine %", ("api", "webhook", "other_load_pct")),
]


def targets(results: Figures) -> list[dict[str, Any]]:
    """Each target of issue 6: the figure, whether it is met (None: not measured)."""
    svc, base = results.get("service", {}), results.get("baseline", {})
    sweep = {s["rows"]: s for s in results.get("sweep", [])}
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, shown: str, ok: Callable[[float], bool]) -> None:
        out.append({"target": name, "value": shown, "met": None if value is None else ok(value)})

    r = ratio(_get(svc, "e2e", "confirmed_per_s"), _get(base, "e2e", "confirmed_per_s"))
    add("end-to-end confirmed/s >= 0.8x baseline", r, _x(r), lambda v: v >= 0.8)
    p99 = _num(_get(svc, "api", "enqueue", "p99_ms"))
    add("enqueue p99 <= 20 ms at 64 in flight", p99, f"{_fmt(p99)} ms", lambda v: v <= 20)
    p99 = _num(_get(svc, "api", "webhook", "p99_ms"))
    add("webhook p99 <= 20 ms at 64 in flight", p99, f"{_fmt(p99)} ms", lambda v: v <= 20)
    r = ratio(_get(svc, "e2e", "cpu_s_per_1000"), _get(base, "e2e", "cpu_s_per_1000"))
    add("service CPU per cancel <= 1.25x baseline", r, _x(r), lambda v: v <= 1.25)
    rss = _num(_get(svc, "e2e", "peak_rss_mb"))
    add("peak RSS <= 150 MB (end to end)", rss, f"{_fmt(rss)} MB", lambda v: v <= 150)
    big = max(sweep) if sweep else None
    small = min(sweep) if sweep else None
    big_ms = _num(sweep[big]["round_ms"]) if big else None
    add(
        f"sweep round <= 50 ms at {big or 0:,} rows",
        big_ms,
        f"{_fmt(big_ms)} ms",
        lambda v: v <= 50,
    )
    r = ratio(big_ms, sweep[small]["round_ms"]) if big and small and big != small else None
    add(f"sweep at {big or 0:,} <= 1.5x at {small or 0:,} rows", r, _x(r), lambda v: v <= 1.5)
    x = _num(_get(svc, "e2e", "xacts_per_cancel"))
    add("<= 4 DB transactions per cancel", x, _fmt(x), lambda v: v <= 4.0)
    return out


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_report(console: Console, data: Figures) -> None:
    results = data["results"]
    svc, base = results.get("service", {}), results.get("baseline", {})
    variant = data["options"].get("variant")
    title = "orchestrator benchmark (service vs baseline, same run)"
    table = Table(title=title + (f"; service with prototypes: {variant}" if variant else ""))
    for column in ("phase", "figure", "service", "baseline", "service / baseline"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    last = None
    for section, label, path in ROWS:
        ours, theirs = _get(svc, *path), _get(base, *path)
        if ours is None and theirs is None:
            continue
        r = ratio(ours, theirs)
        table.add_row(section if section != last else "", label, _fmt(ours), _fmt(theirs), _x(r))
        last = section
    for s in results.get("sweep", []):
        table.add_row(
            "sweeper",
            f"one round, {s['overdue']:,} overdue of {s['rows']:,} rows (ms)",
            _fmt(s["round_ms"]),
            "",
            "",
        )
        kept = s.get("retention")
        if kept:
            table.add_row(
                "retention",
                f"one batch of {kept['batch']} expired of {s['rows']:,} rows (ms)",
                _fmt(kept["batch_ms"]),
                "",
                "",
            )
            table.add_row(
                "",
                f"one round (<= 10 batches), {_fmt(kept['round_deleted'])} deleted (ms)",
                _fmt(kept["round_ms"]),
                "",
                "",
            )
            table.add_row(
                "", "a round with nothing to delete (ms)", _fmt(kept["idle_round_ms"]), "", ""
            )
    claim = results.get("claim")
    if claim:
        for way in ("unlimited", "limited", "before", "before-no-notify"):
            figures = claim.get(way, {})
            table.add_row(
                "claim" if way == "unlimited" else "",
                f"{way}: ms per claim of {claim['batch']} (Postgres CPU ms)",
                f"{_fmt(figures.get('ms_per_claim'))} ({_fmt(figures.get('pg_cpu_ms_per_claim'))})",
                "",
                "",
            )
    pgb = results.get("pgbench")
    if pgb:
        label = f"1-row INSERT/s, {pgb['clients']} clients"
        table.add_row("pgbench", label, _fmt(pgb["tps"]), "", "")
        table.add_row("", "Postgres CPU ms / INSERT", _fmt(pgb["pg_cpu_ms_per_xact"]), "", "")
        for key, what in (
            ("update", "1-row UPDATE/s"),
            ("update_notify", "the same + pg_notify/s"),
        ):
            if key in pgb:
                table.add_row("", what, _fmt(pgb[key]["tps"]), "", "")
        e2e = _get(svc, "e2e", "confirmed_per_s")
        r = ratio(e2e, pgb["tps"])
        table.add_row("", "service confirmed/s ÷ pgbench INSERT/s", _x(r), "", "")
    console.print(table)

    verdict = Table(title="targets of issue 6")
    for column in ("target", "measured", "met"):
        verdict.add_column(column)
    for t in data["targets"]:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "not measured"}[t["met"]]
        verdict.add_row(t["target"], t["value"], met)
    console.print(verdict)
