"""asyncpg access to ``vps_instances`` and cost-sync's own tables; never opens or closes a pool.

Guarantees: a run's writes (changed values, their history rows, the run's ledger row) happen in one
transaction, in one statement each; only rows whose value differs are updated (``IS DISTINCT
FROM``), so a steady-state run writes nothing but its ledger row; a row whose status left the scope
during the run is not touched. Runs are exclusive across processes through an advisory lock.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from cost_sync.errors import DatabaseError, LockTimeout
from cost_sync.models import Estimate, RowOutcome, RunReport, VpsRow

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

#: Advisory lock key making sync runs exclusive (ASCII "cs-sync").
SYNC_LOCK_KEY = 0x63732D73796E63
_LOCK_POLL_SECONDS = 0.2

#: A connection of its own or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

_READ_ROWS = """
SELECT id, hostwinds_instance_id, status, approximate_cost
FROM vps_instances
WHERE status = ANY($1::text[])
ORDER BY id
"""

_READ_ALL_IDS = "SELECT id, hostwinds_instance_id, status FROM vps_instances"

# One statement: the CTEs share one snapshot, so `old` sees the values before `changed` updates
# them, and each history row records exactly the change made.
_WRITE = """
WITH new AS (
    SELECT *
    FROM unnest($2::uuid[], $3::numeric[], $4::text[], $5::text[], $6::numeric[], $7::int[],
                $8::bool[], $9::int[], $10::text[])
         AS n(id, cost, source, cycle, cycle_price, months, hourly_ceiling, product_id, product_name)
),
old AS (
    SELECT v.id, v.hostwinds_instance_id, v.approximate_cost
    FROM vps_instances v JOIN new USING (id)
),
changed AS (
    UPDATE vps_instances v
    SET approximate_cost = new.cost, updated = now()
    FROM new
    WHERE v.id = new.id
      AND v.approximate_cost IS DISTINCT FROM new.cost
      AND v.status = ANY($11::text[])
    RETURNING v.id
)
INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, old_cost, new_cost,
                               source, cycle, cycle_price, months, hourly_ceiling, product_id,
                               product_name)
SELECT $1, changed.id, old.hostwinds_instance_id, old.approximate_cost, new.cost, new.source,
       new.cycle, new.cycle_price, new.months, new.hourly_ceiling, new.product_id, new.product_name
FROM changed JOIN old USING (id) JOIN new USING (id)
"""

_INSERT_RUN = """
INSERT INTO cost_sync_runs (id, trigger, outcome, started, finished, instances, rows_in_scope,
                            matched, updated, unchanged, unpriced, priced_by_source,
                            unpriced_by_reason, hostwinds_calls, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, $15)
"""


async def read_rows(conn: Conn, statuses: Sequence[str]) -> list[VpsRow]:
    """Every ``vps_instances`` row whose status is in scope."""
    records = await conn.fetch(_READ_ROWS, list(statuses))
    return [
        VpsRow(
            id=r["id"],
            hostwinds_instance_id=r["hostwinds_instance_id"],
            status=r["status"],
            approximate_cost=r["approximate_cost"],
        )
        for r in records
    ]


async def read_identities(conn: Conn) -> list[tuple[uuid.UUID, str | None, str | None]]:
    """(id, hostwinds_instance_id, status) of every row, to resolve ``--instance`` arguments."""
    return [(r["id"], r["hostwinds_instance_id"], r["status"]) for r in await conn.fetch(_READ_ALL_IDS)]


@asynccontextmanager
async def run_lock(conn: Conn, *, timeout: float) -> AsyncIterator[None]:
    """Hold the sync advisory lock; wait up to ``timeout`` seconds, then raise LockTimeout."""
    deadline = time.monotonic() + timeout
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SYNC_LOCK_KEY):
        if time.monotonic() >= deadline:
            raise LockTimeout(f"another run is in progress (waited {timeout:g} s for it to finish)")
        await asyncio.sleep(_LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", SYNC_LOCK_KEY)


def _json(counts: dict[str, int]) -> str:
    return json.dumps(counts, sort_keys=True)


async def insert_run(conn: Conn, report: RunReport, *, instances: Sequence[str] | None = None) -> None:
    """Write the run's ledger row."""
    await conn.execute(
        _INSERT_RUN,
        report.run_id,
        report.trigger,
        report.outcome,
        report.started_at,
        report.finished_at,
        list(instances) if instances else None,
        report.rows_in_scope,
        report.matched,
        report.updated,
        report.unchanged,
        sum(report.unpriced_by_reason.values()),
        _json(report.priced_by_source),
        _json(report.unpriced_by_reason),
        _json(report.hostwinds_calls),
        report.error,
    )


async def write_estimates(
    conn: Conn,
    run_id: uuid.UUID,
    outcomes: Sequence[RowOutcome],
    *,
    statuses: Sequence[str],
) -> int:
    """Store every changed estimate and its history row in one statement; return rows updated.

    Must run inside the caller's transaction, after the run's ledger row exists.
    """
    priced = [(o.row, o.result) for o in outcomes if isinstance(o.result, Estimate) and o.changed]
    if not priced:
        return 0
    columns: tuple[list[object], ...] = tuple([] for _ in range(9))
    for row, est in priced:
        values = (
            row.id,
            est.monthly,
            est.source.value,
            est.cycle.value if est.cycle else None,
            est.cycle_price,
            est.months,
            est.hourly_ceiling,
            est.product_id,
            est.product_name,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    # asyncpg prepares and caches statements; after five executions PostgreSQL may switch to a
    # generic plan that cannot see the arrays' sizes and joins them badly. Plan each run afresh.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    status = await conn.execute(_WRITE, run_id, *columns, list(statuses))
    # "INSERT 0 <n>": one history row per updated row.
    return int(status.rsplit(" ", 1)[-1])


async def fleet_total(conn: Conn, statuses: Sequence[str]) -> Decimal:
    """Sum of ``approximate_cost`` over the rows in scope (unknown values count as nothing)."""
    total = await conn.fetchval(
        "SELECT coalesce(sum(approximate_cost), 0) FROM vps_instances WHERE status = ANY($1::text[])",
        list(statuses),
    )
    return Decimal(total)


def database_error(exc: BaseException) -> DatabaseError:
    """An operator-facing DatabaseError for a failed statement or a lost connection."""
    return DatabaseError(f"the run failed in PostgreSQL: {type(exc).__name__}: {exc}")
