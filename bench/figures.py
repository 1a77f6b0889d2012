"""The shapes of the figures the benchmark measures, shared by the child process and the report.

Timings are float seconds (they are measurements, not money); money never appears here.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, TypedDict

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
    #: ``RunReport.price_cache``: hits, asked, reasons (new/changed/stale/forced), failed, pending.
    price_cache: dict[str, Any]
    #: Mean age of the cached observations when the run started (None: the cache was empty). A
    #: service comes due for refresh once per max age, so a run at this age expects about
    #: ``services x age / max age`` stale asks.
    cache_age_seconds: float | None


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
    #: The same update plus the cold run's history rows in one plain statement, per repetition.
    history_floor_seconds: list[float]
    #: History rows the history floor writes (those of the last run that wrote: one per change).
    history_floor_rows: int
    #: One ``UPDATE ... WHERE id = $1`` per row in one transaction, per repetition.
    naive_seconds: list[float]
    #: Rows the floor and the naive baseline write (the rows the cold run changed).
    rows_written: int
    #: True when the floor and the naive baseline left exactly the cold run's final values.
    floor_same_values: bool
    history_floor_same_values: bool
    naive_same_values: bool
    #: RSS of the child after its imports, before any run (MB).
    rss_start_mb: float
    #: Peak RSS of the child over the cost-sync runs (VmHWM, MB).
    peak_rss_mb: float
    #: ``[sync] max_price_age_seconds`` of the runs.
    max_price_age_seconds: float


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


class OutageFigures(TypedDict):
    """A cold run that meets an outage halfway through its asking, then a normal run."""

    #: Services the cold run had to ask (every matched instance: the cache was empty).
    services: int
    #: Services answered when the outage began (``get_billingcycle_prices`` answers 503 from then on).
    answered_at_outage: int
    #: How the first run ended ("failed" expected) and why.
    first_outcome: str
    first_error: str | None
    #: Rows with a value in vps_instances after the failed run (cold start: 0 means nothing written).
    rows_valued_after_failure: int
    #: Observations the failed run left in the cache (its answers, kept).
    observations_kept: int
    #: ``get_billingcycle_prices`` calls (logical, retries not counted) of each run and both.
    first_asks: int
    second_asks: int
    total_asks: int
    #: HTTP requests for cycle prices the sandbox received over both runs (retries included).
    http_requests: int
    second_outcome: str
    second_unpriced_pending: int
    #: total_asks / services.
    asks_per_service: float


class SimulatedRun(TypedDict):
    """One hourly run of the simulation on the virtual clock."""

    hour: int
    #: Instances changed in the sandbox fleet (billing cycle or plan) since the previous run.
    changed_instances: int
    asked: int
    reasons: dict[str, int]
    #: 1.5 x N x interval / max age + changed_instances.
    bound: float
    updated: int
    wall: float


class SimulationFigures(TypedDict):
    """Hourly runs on a virtual clock after a cold run, with a few instances changed every hour."""

    services: int
    hours: int
    interval_seconds: float
    max_age_seconds: float
    change_share: float
    cold_asked: int
    runs: list[SimulatedRun]
    #: The run whose asks come closest to (or go furthest over) its bound.
    worst: SimulatedRun
    total_asked_after_cold: int


class ResyncFigures(TypedDict):
    """A targeted resync requested during the daemon's cold start-up sync, against a slow Hostwinds."""

    services: int
    requests_per_second: float
    max_run_seconds: float
    #: Seconds from the daemon's start to the POST /resync.
    requested_after_seconds: float
    #: The cold sync's progress when the resync was requested.
    cold_asked_at_request: int
    cold_to_ask: int
    #: Seconds from the POST /resync to its run's end (succeeded or failed).
    latency_seconds: float
    #: The resync's run alone (its report's duration).
    run_seconds: float | None
    state: str
    #: True when the named row had a price after the resync's run.
    target_priced: bool
    #: Whole-fleet runs the daemon had finished when the resync's run ended.
    fleet_runs_before: int


class CacheFigures(TypedDict):
    """The price cache's figures of one fleet size (bench/cache_figures.py)."""

    n: int
    outage: OutageFigures
    simulation: SimulationFigures
    resync: ResyncFigures
