"""The benchmark's output: the summary of each size, the targets with PASS/MISS, the table, the PNG.

Targets (from the issue), judged by reading the figures, never by a timed unit test:

- the database phase of a cold sync within 1.5x the write floor at 10,000 rows;
- pricing under 0.5 s per 100,000 instances;
- peak RSS under 250 MB at 100,000 instances (measured with ``--large`` only);
- a warm sync writes 0 rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from figures import RunFigures, SizeFigures, median, median_run
from pricing_throughput import PricingFigures

DB_RATIO_MAX = 1.5
DB_RATIO_N = 10_000
PRICING_MAX_SECONDS = 0.5
PRICING_PER = 100_000
RSS_MAX_MB = 250.0
RSS_N = 100_000

Status = Literal["PASS", "MISS", "NOT MEASURED"]


class Summary(TypedDict):
    """The figures of one size reduced to what the table shows (medians over the repetitions)."""

    n: int
    cold: RunFigures
    warm: RunFigures
    late: RunFigures | None
    floor_seconds: float
    naive_seconds: float
    rows_written: int
    cold_rows_per_second: float
    warm_rows_per_second: float
    database_rows_per_second: float
    db_over_floor: float
    late_db_over_floor: float | None
    naive_over_cost_sync: float
    pricing_per_100k: float
    peak_rss_mb: float
    rss_start_mb: float
    warm_rows_written: int
    same_final_values: bool


@dataclass(frozen=True)
class Target:
    """One target, its verdict and the figure it was judged on."""

    name: str
    status: Status
    measured: str
    detail: str = ""


def summarise(size: SizeFigures) -> Summary:
    """Medians and ratios of one size's figures."""
    cold = median_run(size["cold"])
    warm = median_run(size["warm"])
    floor = median(size["floor_seconds"])
    naive = median(size["naive_seconds"])
    n = size["n"]
    late = size["late"]
    return Summary(
        n=n,
        cold=cold,
        warm=warm,
        late=late,
        floor_seconds=floor,
        naive_seconds=naive,
        rows_written=size["rows_written"],
        cold_rows_per_second=cold["rows_in_scope"] / cold["wall"],
        warm_rows_per_second=warm["rows_in_scope"] / warm["wall"],
        database_rows_per_second=size["rows_written"] / cold["database"],
        db_over_floor=cold["database"] / floor,
        late_db_over_floor=late["database"] / floor if late is not None else None,
        naive_over_cost_sync=naive / cold["database"],
        pricing_per_100k=cold["pricing"] * PRICING_PER / n,
        peak_rss_mb=size["peak_rss_mb"],
        rss_start_mb=size["rss_start_mb"],
        warm_rows_written=max(
            max(run["updated"], run["rows_rewritten"], run["history_rows_added"]) for run in size["warm"]
        ),
        same_final_values=size["floor_same_values"] and size["naive_same_values"],
    )


def judge(summaries: Sequence[Summary], pricing: PricingFigures) -> list[Target]:
    """Every target with its verdict."""
    by_n = {s["n"]: s for s in summaries}
    targets: list[Target] = []

    at = by_n.get(DB_RATIO_N)
    name = f"database phase <= {DB_RATIO_MAX}x write floor at {DB_RATIO_N:,} rows"
    if at is None:
        targets.append(Target(name, "NOT MEASURED", "-", f"N={DB_RATIO_N:,} was not run"))
    else:
        ratio = at["db_over_floor"]
        targets.append(
            Target(
                name,
                "PASS" if ratio <= DB_RATIO_MAX else "MISS",
                f"{ratio:.2f}x",
                f"database {at['cold']['database']:.3f} s vs floor {at['floor_seconds']:.3f} s",
            )
        )

    scale = PRICING_PER / pricing["instances"]
    micro = pricing["median_seconds"] * scale
    name = f"pricing < {PRICING_MAX_SECONDS} s per {PRICING_PER:,} instances"
    targets.append(
        Target(
            f"{name} (price_rows in-process)",
            "PASS" if micro < PRICING_MAX_SECONDS else "MISS",
            f"{micro:.3f} s",
            f"median of {len(pricing['seconds'])} over {pricing['instances']:,} synthetic rows",
        )
    )
    large = by_n.get(PRICING_PER)
    if large is not None:
        phase = large["cold"]["pricing"]
        targets.append(
            Target(
                f"{name} (pricing phase of the {PRICING_PER:,} cold sync)",
                "PASS" if phase < PRICING_MAX_SECONDS else "MISS",
                f"{phase:.3f} s",
            )
        )

    name = f"peak RSS < {RSS_MAX_MB:.0f} MB at {RSS_N:,} instances"
    big = by_n.get(RSS_N)
    if big is None:
        biggest = max(summaries, key=lambda s: s["n"], default=None)
        seen = f"{biggest['peak_rss_mb']:.0f} MB at {biggest['n']:,}" if biggest else "-"
        targets.append(Target(name, "NOT MEASURED", "-", f"run with --large (seen: {seen})"))
    else:
        rss = big["peak_rss_mb"]
        targets.append(Target(name, "PASS" if rss < RSS_MAX_MB else "MISS", f"{rss:.0f} MB"))

    name = "a warm sync writes 0 rows"
    if not summaries:
        targets.append(Target(name, "NOT MEASURED", "-"))
    else:
        worst = max(s["warm_rows_written"] for s in summaries)
        where = ", ".join(f"N={s['n']:,}: {s['warm_rows_written']}" for s in summaries)
        targets.append(
            Target(
                name,
                "PASS" if worst == 0 else "MISS",
                f"{worst} rows",
                f"updated, rewritten tuples and history rows, every warm run ({where})",
            )
        )
    return targets


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _calls(calls: dict[str, int]) -> str:
    short = {"get_instances": "inst", "get_price_list": "list", "get_billingcycle_prices": "cycle"}
    return " ".join(f"{short.get(action, action)}={count:,}" for action, count in sorted(calls.items()))


def _late(summary: Summary, text: Callable[[RunFigures], str]) -> str:
    late = summary["late"]
    return text(late) if late is not None else "-"


def table(summaries: Sequence[Summary]) -> str:
    """The figures as a fixed-width table, one column per fleet size."""
    rows: list[tuple[str, list[str]]] = [
        ("instances (rows in scope)", [f"{s['n']:,}" for s in summaries]),
        ("COLD SYNC (every row changes)", ["" for _ in summaries]),
        ("  wall time (s)", [_seconds(s["cold"]["wall"]) for s in summaries]),
        ("    hostwinds phase (s)", [_seconds(s["cold"]["hostwinds"]) for s in summaries]),
        ("    pricing phase (s)", [_seconds(s["cold"]["pricing"]) for s in summaries]),
        ("    database phase (s)", [_seconds(s["cold"]["database"]) for s in summaries]),
        ("    other (s)", [_seconds(s["cold"]["other"]) for s in summaries]),
        ("  rows/s (wall)", [f"{s['cold_rows_per_second']:,.0f}" for s in summaries]),
        ("  rows/s (database phase)", [f"{s['database_rows_per_second']:,.0f}" for s in summaries]),
        ("  rows updated", [f"{s['cold']['updated']:,}" for s in summaries]),
        ("  rows unpriced (kept)", [f"{s['cold']['unpriced']:,}" for s in summaries]),
        ("  Hostwinds calls", [_calls(s["cold"]["hostwinds_calls"]) for s in summaries]),
        ("COLD SYNC, 6th write on one pooled connection", ["" for _ in summaries]),
        ("  wall time (s)", [_late(s, lambda r: _seconds(r["wall"])) for s in summaries]),
        ("    database phase (s)", [_late(s, lambda r: _seconds(r["database"])) for s in summaries]),
        (
            "    database phase / floor",
            [f"{s['late_db_over_floor']:.2f}x" if s["late_db_over_floor"] else "-" for s in summaries],
        ),
        ("WARM SYNC (nothing changed)", ["" for _ in summaries]),
        ("  wall time (s)", [_seconds(s["warm"]["wall"]) for s in summaries]),
        ("    hostwinds phase (s)", [_seconds(s["warm"]["hostwinds"]) for s in summaries]),
        ("    pricing phase (s)", [_seconds(s["warm"]["pricing"]) for s in summaries]),
        ("    database phase (s)", [_seconds(s["warm"]["database"]) for s in summaries]),
        ("  rows/s (wall)", [f"{s['warm_rows_per_second']:,.0f}" for s in summaries]),
        ("  rows written", [f"{s['warm_rows_written']:,}" for s in summaries]),
        ("  Hostwinds calls", [_calls(s["warm"]["hostwinds_calls"]) for s in summaries]),
        ("BASELINES (same final values)", ["" for _ in summaries]),
        ("  write floor, 1 UPDATE (s)", [_seconds(s["floor_seconds"]) for s in summaries]),
        ("  naive, 1 UPDATE/row (s)", [_seconds(s["naive_seconds"]) for s in summaries]),
        ("  database phase / floor", [f"{s['db_over_floor']:.2f}x" for s in summaries]),
        ("  naive / cost-sync database", [f"{s['naive_over_cost_sync']:.2f}x" for s in summaries]),
        ("  final values identical", ["yes" if s["same_final_values"] else "NO" for s in summaries]),
        ("MEMORY (cost-sync process)", ["" for _ in summaries]),
        ("  RSS after imports (MB)", [f"{s['rss_start_mb']:.0f}" for s in summaries]),
        ("  peak RSS (MB)", [f"{s['peak_rss_mb']:.0f}" for s in summaries]),
        ("  pricing per 100,000 (s)", [_seconds(s["pricing_per_100k"]) for s in summaries]),
    ]
    # Section headings (no figures) may run into the figure columns.
    label_width = max(len(label) for label, cells in rows if any(cells))
    widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(summaries))]
    lines = []
    for label, cells in rows:
        padded = "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
        lines.append(f"{label.ljust(label_width)}  {padded}".rstrip())
    return "\n".join(lines)


def targets_text(targets: Sequence[Target]) -> str:
    """One line per target: verdict, name, measured figure and detail."""
    lines = []
    for target in targets:
        detail = f"  ({target.detail})" if target.detail else ""
        lines.append(f"{target.status:<12} {target.name}: {target.measured}{detail}")
    return "\n".join(lines)


def targets_json(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """The targets as JSON objects."""
    return [asdict(target) for target in targets]


def plot(summaries: Sequence[Summary], pricing: PricingFigures, path: Path) -> None:
    """Phase times, floor and naive against N (log-log), and peak RSS against N, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [s["n"] for s in summaries]
    fig, (times, memory) = plt.subplots(1, 2, figsize=(12, 6.5), gridspec_kw={"width_ratios": [2, 1]})
    series: list[tuple[str, list[float], str]] = [
        ("cold sync, wall", [s["cold"]["wall"] for s in summaries], "o-"),
        ("  hostwinds phase", [s["cold"]["hostwinds"] for s in summaries], "s--"),
        ("  pricing phase", [s["cold"]["pricing"] for s in summaries], "^--"),
        ("  database phase", [s["cold"]["database"] for s in summaries], "D-"),
        ("warm sync, wall", [s["warm"]["wall"] for s in summaries], "o:"),
        ("write floor (1 UPDATE)", [s["floor_seconds"] for s in summaries], "v-"),
        ("naive (1 UPDATE/row)", [s["naive_seconds"] for s in summaries], "x-"),
    ]
    for label, values, style in series:
        times.plot(ns, [max(v, 1e-4) for v in values], style, label=label.strip())
    late = [(s["n"], s["late"]["database"]) for s in summaries if s["late"] is not None]
    if late:
        times.plot(
            [n for n, _ in late],
            [seconds for _, seconds in late],
            "D:",
            color="darkred",
            label="database phase, 6th write on one connection",
        )
    times.plot(
        [pricing["instances"]],
        [pricing["median_seconds"]],
        "*",
        markersize=12,
        label="price_rows in-process",
    )
    times.axhline(
        PRICING_MAX_SECONDS, color="grey", linewidth=0.8, linestyle=":", label="pricing target per 100,000"
    )
    times.set_xscale("log")
    times.set_yscale("log")
    times.set_xlabel("instances (N)")
    times.set_ylabel("seconds (median)")
    times.set_title("cost-sync against the sandbox: time vs N")
    times.grid(True, which="both", alpha=0.3)
    times.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)

    memory.plot(ns, [s["peak_rss_mb"] for s in summaries], "o-", label="peak RSS")
    memory.axhline(
        RSS_MAX_MB, color="red", linewidth=0.8, linestyle="--", label=f"target {RSS_MAX_MB:.0f} MB"
    )
    memory.set_ylim(bottom=0)
    memory.set_xscale("log")
    memory.set_xlabel("instances (N)")
    memory.set_ylabel("MB")
    memory.set_title("peak RSS of the cost-sync process")
    memory.grid(True, which="both", alpha=0.3)
    memory.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
