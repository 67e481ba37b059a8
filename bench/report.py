"""The table printed at the end of a run, and the verdict on each target of issue 6."""

from __future__ import annotations

import functools
import math
import operator
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


def _e2e_rows(section: str, key: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (section, label, (key, *path))
        for label, path in (
            ("cancels", ("cancels",)),
            ("confirmed/s", ("confirmed_per_s",)),
            ("time to confirm p50 ms", ("ttc_p50_ms",)),
            ("time to confirm p99 ms", ("ttc_p99_ms",)),
            ("enqueue p99 ms (under load)", ("enqueue", "p99_ms")),
            ("CPU s / 1,000 cancels", ("cpu_s_per_1000",)),
            ("Postgres CPU s / 1,000", ("pg_cpu_s_per_1000",)),
            ("service + Postgres CPU s / 1,000", ("total_cpu_s_per_1000",)),
            ("peak RSS MB", ("peak_rss_mb",)),
            ("DB transactions (commits) / cancel", ("xacts_per_cancel",)),
            ("WAL bytes / cancel", ("wal_bytes_per_cancel",)),
            ("tuples inserted / cancel", ("tup_inserted_per_cancel",)),
            ("tuples updated / cancel", ("tup_updated_per_cancel",)),
            ("tuples fetched / cancel", ("tup_fetched_per_cancel",)),
            ("tuples returned / cancel", ("tup_returned_per_cancel",)),
            ("other load on the machine %", ("other_load_pct",)),
        )
    ]


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
    *_e2e_rows("end to end", "e2e"),
    *_e2e_rows("end to end, large", "e2e_large"),
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


#: Rounds at scale (bench/scale.py) compared between the smallest and the largest table.
SCALE_ROUNDS = ("claim", "sweep", "retention", "stats", "counts_by_provider")


def targets_18(results: Figures) -> list[dict[str, Any]]:
    """Each target of issue 18 (item 6), against the lean baseline of the same run: the
    figure, the baseline's, whether it is met (None: not measured)."""
    svc, base = results.get("service", {}), results.get("baseline", {})
    out: list[dict[str, Any]] = []

    def add(
        name: str, value: float | None, shown: str, base_shown: str, ok: Callable[[float], bool]
    ) -> None:
        out.append(
            {
                "target": name,
                "value": shown,
                "baseline": base_shown,
                "met": None if value is None else ok(value),
            }
        )

    for key, floor in (("e2e", 1.25), ("e2e_large", 1.2)):
        ours, theirs = _get(svc, key, "confirmed_per_s"), _get(base, key, "confirmed_per_s")
        n = _get(svc, key, "cancels") or 0
        r = ratio(ours, theirs)
        add(
            f"end to end at {n:,} cancels >= {floor}x baseline",
            r,
            f"{_x(r)} ({_fmt(ours)}/s)",
            f"{_fmt(theirs)}/s",
            functools.partial(operator.le, floor),
        )
    for path, name, ceiling in (
        ("pg_cpu_s_per_1000", "Postgres CPU per cancel <= 1.25x baseline", 1.25),
        ("total_cpu_s_per_1000", "service + Postgres CPU per cancel <= 1.0x baseline", 1.0),
    ):
        ours, theirs = _get(svc, "e2e", path), _get(base, "e2e", path)
        r = ratio(ours, theirs)
        shown, base_shown = f"{_x(r)} ({_fmt(ours)} ms)", f"{_fmt(theirs)} ms"
        add(name, r, shown, base_shown, functools.partial(operator.ge, ceiling))
    wal = _num(_get(svc, "e2e", "wal_bytes_per_cancel"))
    add(
        "WAL <= 3 KB (3,000 bytes) per cancel",
        wal,
        f"{_fmt(wal)} B",
        f"{_fmt(_get(base, 'e2e', 'wal_bytes_per_cancel'))} B",
        lambda v: v <= 3000,
    )
    commits = _num(_get(svc, "e2e", "xacts_per_cancel"))
    add(
        "<= 1 commit per cancel at 64 in flight",
        commits,
        _fmt(commits),
        _fmt(_get(base, "e2e", "xacts_per_cancel")),
        lambda v: v <= 1.0,
    )
    rss = _num(_get(svc, "e2e", "peak_rss_mb"))
    add(
        "peak RSS <= 80 MB",
        rss,
        f"{_fmt(rss)} MB",
        f"{_fmt(_get(base, 'e2e', 'peak_rss_mb'))} MB",
        lambda v: v <= 80,
    )
    items = _num(_get(svc, "api", "batch", "items_per_s"))
    add("batch enqueue >= 5,000 items/s", items, f"{_fmt(items)}/s", "-", lambda v: v >= 5000)
    scale = {s["rows"]: s for s in results.get("scale", [])}
    if len(scale) >= 2:
        small, big = min(scale), max(scale)
        for name in SCALE_ROUNDS:
            r = ratio(_get(scale[big], name, "p50_ms"), _get(scale[small], name, "p50_ms"))
            add(
                f"{name} round at {big:,} rows <= 1.2x at {small:,} (p50)",
                r,
                f"{_x(r)} ({_fmt(_get(scale[big], name, 'p50_ms'))} ms)",
                "-",
                lambda v: v <= 1.2,
            )
    return out


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_report(console: Console, data: Figures) -> None:
    results = data["results"]
    svc, base = results.get("service", {}), results.get("baseline", {})
    variant = data["options"].get("variant")
    title = "orchestrator benchmark (service vs baseline, same run)"
    table = Table(title=title + (f"; service with prototypes: {variant}" if variant else ""))
    naive = results.get("naive", {})
    columns = ["phase", "figure", "service", "baseline", "service / baseline"]
    if naive:
        columns += ["naive", "service / naive"]
    for column in columns:
        table.add_column(column, justify="right" if column != "figure" else "left")
    last = None
    for section, label, path in ROWS:
        ours, theirs = _get(svc, *path), _get(base, *path)
        if ours is None and theirs is None:
            continue
        r = ratio(ours, theirs)
        cells = [section if section != last else "", label, _fmt(ours), _fmt(theirs), _x(r)]
        if naive:
            cells += [_fmt(_get(naive, *path)), _x(ratio(ours, _get(naive, *path)))]
        table.add_row(*cells)
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
    print_scale(console, results)

    verdict = Table(title="targets of issue 6")
    for column in ("target", "measured", "met"):
        verdict.add_column(column)
    for t in data["targets"]:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "not measured"}[t["met"]]
        verdict.add_row(t["target"], t["value"], met)
    console.print(verdict)

    verdict = Table(title="targets of issue 18 (against the lean baseline of this run)")
    for column in ("target", "measured", "baseline", "met"):
        verdict.add_column(column)
    for t in data.get("targets_18", []):
        met = {True: "[green]met[/]", False: "[red]not met[/]", None: "not measured"}[t["met"]]
        verdict.add_row(t["target"], t["value"], t["baseline"], met)
    console.print(verdict)


def print_scale(console: Console, results: Figures) -> None:
    """Rounds at scale: each round's ms and what it read, per table size."""
    sizes = results.get("scale", [])
    if not sizes:
        return
    table = Table(title="rounds at scale (issue 18, item 5): a Store over one connection")
    table.add_column("round")
    table.add_column("figure")
    for s in sizes:
        table.add_column(f"{s['rows']:,} rows", justify="right")
    if len(sizes) >= 2:
        table.add_column("largest / smallest", justify="right")
    figures = (
        ("mean ms", ("mean_ms",)),
        ("p50 ms", ("p50_ms",)),
        ("p95 ms", ("p95_ms",)),
        ("tuples fetched / round", ("per_round", "tup_fetched")),
        ("tuples returned / round", ("per_round", "tup_returned")),
        ("buffers hit / round", ("per_round", "blks_hit")),
        ("buffers read / round", ("per_round", "blks_read")),
    )
    for name in SCALE_ROUNDS:
        for n, (label, path) in enumerate(figures):
            values = [_get(s, name, *path) for s in sizes]
            row = [name if n == 0 else "", label, *(_fmt(v) for v in values)]
            if len(sizes) >= 2:
                row.append(_x(ratio(values[-1], values[0])))
            table.add_row(*row)
    for label, key in (
        ("build s (fill, indexes)", None),
        ("heap + indexes MB", None),
        ("requests, state: heap + indexes MB", None),
        ("other load % (build, rounds)", None),
        ("load average (1, 5, 15 min)", "load_average"),
    ):
        cells = []
        for s in sizes:
            if key == "load_average":
                cells.append(", ".join(f"{x:.1f}" for x in s.get("load_average", [])[:3]))
            elif label.startswith("build"):
                cells.append(f"{s['build_s']:.0f} ({s['fill_s']:.0f}, {s['index_s']:.0f})")
            elif label.startswith("heap"):  # both tables since 0016
                cells.append(_fmt((s["heap_bytes"] + s["index_bytes"]) / 2**20))
            elif label.startswith("requests"):  # 0016's two tables, absent from older JSON
                mb = [
                    _fmt(s[f"{t}_heap_bytes"] / 2**20) + " + " + _fmt(s[f"{t}_index_bytes"] / 2**20)
                    if f"{t}_heap_bytes" in s
                    else "-"
                    for t in ("requests", "state")
                ]
                cells.append(", ".join(mb))
            else:
                cells.append(f"{s.get('build_other_load_pct')}, {s.get('other_load_pct')}")
        table.add_row("table", label, *cells, *([""] if len(sizes) >= 2 else []))
    console.print(table)


def print_statements(console: Console, results: Figures) -> None:
    """Where Postgres's time went end to end (`--statements`): each implementation's top
    statements, per cancel. A nested statement's time is also inside its caller's."""
    for name in ("service", "baseline", "naive"):
        top = _get(results, name, "e2e", "runs")
        runs = top if isinstance(top, list) else []
        statements = next((r["statements"] for r in runs if "statements" in r), None)
        if not statements:
            continue
        table = Table(title=f"{name}: top statements end to end (pg_stat_statements), per cancel")
        for column in ("ms", "calls", "rows", "WAL B", "blocks hit", "dirtied", "statement"):
            table.add_column(column, justify="left" if column == "statement" else "right")
        for s in statements:
            table.add_row(
                f"{s['ms_per_cancel']:.3f}",
                f"{s['calls_per_cancel']:.2f}",
                f"{s['rows_per_cancel']:.2f}",
                f"{s['wal_bytes_per_cancel']:,.0f}",
                f"{s['blocks_hit_per_cancel']:.1f}",
                f"{s['blocks_dirtied_per_cancel']:.2f}",
                ("" if s["toplevel"] else "  (nested) ") + s["query"],
            )
        console.print(table)
