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

# One statement. `prior` is read in the statement's snapshot, so it holds the values from before
# the UPDATE, and RETURNING hands each changed row's old and new value to the history INSERT.
# What a history row says of the price (source, cycle, cycle price, months, product) repeats
# across a fleet, so each distinct "basis" is sent once and rows refer to it by position.
_WRITE = """
WITH basis AS (
    SELECT *
    FROM unnest($5::text[], $6::text[], $7::numeric[], $8::int[], $9::bool[], $10::int[], $11::text[])
         WITH ORDINALITY
         AS b(source, cycle, cycle_price, months, hourly_ceiling, product_id, product_name, position)
),
new AS (
    SELECT * FROM unnest($2::uuid[], $3::numeric[], $4::int[]) AS n(id, cost, basis)
),
changed AS (
    UPDATE vps_instances v
    SET approximate_cost = new.cost, updated = now()
    FROM new JOIN vps_instances prior ON prior.id = new.id
    WHERE v.id = new.id
      AND v.approximate_cost IS DISTINCT FROM new.cost
      AND v.status = ANY($12::text[])
    RETURNING v.id, prior.hostwinds_instance_id, prior.approximate_cost AS old_cost, new.cost, new.basis
)
INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, old_cost, new_cost,
                               source, cycle, cycle_price, months, hourly_ceiling, product_id,
                               product_name)
SELECT $1, c.id, c.hostwinds_instance_id, c.old_cost, c.cost, b.source, b.cycle, b.cycle_price,
       b.months, b.hourly_ceiling, b.product_id, b.product_name
FROM changed c JOIN basis b ON b.position = c.basis
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

    Must run inside the caller's transaction, which also writes the run's ledger row.
    """
    priced = [(o.row, o.result) for o in outcomes if isinstance(o.result, Estimate) and o.changed]
    if not priced:
        return 0
    ids: list[uuid.UUID] = []
    costs: list[Decimal] = []
    refs: list[int] = []
    bases: dict[tuple[object, ...], int] = {}
    for row, est in priced:
        basis = (
            est.source.value,
            est.cycle.value if est.cycle else None,
            est.cycle_price,
            est.months,
            est.hourly_ceiling,
            est.product_id,
            est.product_name,
        )
        ids.append(row.id)
        costs.append(est.monthly)
        # Positions count from 1, as WITH ORDINALITY does.
        refs.append(bases.setdefault(basis, len(bases) + 1))
    basis_columns = [list(column) for column in zip(*bases, strict=True)]
    # asyncpg prepares and caches statements; after five executions PostgreSQL may switch to a
    # generic plan that cannot see the arrays' sizes and joins them badly. Plan each run afresh.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    status = await conn.execute(_WRITE, run_id, ids, costs, refs, *basis_columns, list(statuses))
    # "INSERT 0 <n>": one history row per updated row.
    return int(status.rsplit(" ", 1)[-1])


def database_error(exc: BaseException) -> DatabaseError:
    """An operator-facing DatabaseError for a failed statement or a lost connection."""
    return DatabaseError(f"the run failed in PostgreSQL: {type(exc).__name__}: {exc}")
