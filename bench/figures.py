"""The shapes of the figures the benchmark measures, shared by the child process and the report.

Timings are float seconds (they are measurements, not money); money never appears here.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TypedDict

#: The three phases of a run, as ``RunReport.phase_seconds`` names them.
PHASES = ("hostwinds", "pricing", "database")
#: PostgreSQL plans a cached prepared statement with its parameters for its first 5 executions,
#: then may switch to a generic plan; asyncpg caches statements per connection, and a pool reuses
#: its connection from run to run. The 6th write on a connection is the first that can be generic.
CUSTOM_PLAN_EXECUTIONS = 5


class RunFigures(TypedDict):
    """One timed ``run_once``: its wall time, its phases and what it did."""

    wall: float
    hostwinds: float
    pricing: float
    database: float
    #: Wall time outside the three phases (lock, matching, logging, report building).
    other: float
    rows_in_scope: int
    matched: int
    changed: int
    updated: int
    unpriced: int
    hostwinds_calls: dict[str, int]
    #: cost_sync_history rows the run added.
    history_rows_added: int
    #: vps_instances rows whose physical tuple (ctid) changed during the run: rows written.
    rows_rewritten: int


class SizeFigures(TypedDict):
    """Everything measured for one fleet size N, in one child process."""

    n: int
    cold: list[RunFigures]
    warm: list[RunFigures]
    #: The cold sync whose write is the 6th on the pool's connection: PostgreSQL may then use a
    #: generic plan for the cached write statement (None when not measured: N too large).
    late: RunFigures | None
    #: One raw ``UPDATE ... FROM unnest`` of the cold run's final values, per repetition.
    floor_seconds: list[float]
    #: One ``UPDATE ... WHERE id = $1`` per row in one transaction, per repetition.
    naive_seconds: list[float]
    #: Rows the floor and the naive baseline write (the rows the cold run changed).
    rows_written: int
    #: True when the floor and the naive baseline left exactly the cold run's final values.
    floor_same_values: bool
    naive_same_values: bool
    #: RSS of the child after its imports, before any run (MB).
    rss_start_mb: float
    #: Peak RSS of the child over the cost-sync runs (VmHWM, MB).
    peak_rss_mb: float


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return float(statistics.median(values))


def median_run(runs: Sequence[RunFigures]) -> RunFigures:
    """A run whose every timing is the median over ``runs``; counts are the last run's."""
    middle = RunFigures(**runs[-1])
    middle["wall"] = median([run["wall"] for run in runs])
    middle["hostwinds"] = median([run["hostwinds"] for run in runs])
    middle["pricing"] = median([run["pricing"] for run in runs])
    middle["database"] = median([run["database"] for run in runs])
    middle["other"] = median([run["other"] for run in runs])
    return middle
