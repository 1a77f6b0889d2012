"""One fleet size's measurements, in a process of its own so that its peak RSS is cost-sync's alone.

Started by ``bench/run.py`` (not by hand) once the database is seeded and the sandbox serves the
fleet from another process::

    COST_SYNC_BENCH_CHILD_DATABASE_URL=URL COST_SYNC_BENCH_SANDBOX_API_KEY=KEY \
        python bench/child.py --n N --sandbox-url URL --repeat R --floor-repeat R \
        --naive-repeat R [--late] --out FILE

In order: a throw-away dry run (one target) to warm imports, the pool and the HTTP connections;
``--repeat`` cold syncs (every priced row changes and every service is asked: the rows are reset to
NULL, the price observation cache emptied and the table vacuumed before each); with ``--late``,
more cold syncs until the pool's connection runs the write statement for the 6th time, the first
time PostgreSQL may plan it generically, and that one timed (the daemon's situation after five
runs with changes); ``--repeat`` warm syncs (nothing changed, every price cached); the peak RSS so
far (VmHWM, not ``ru_maxrss``, which a spawned process inherits from its parent); then, outside
cost-sync, the write floor (one raw ``UPDATE ... FROM unnest`` of the cold run's final values),
the history floor (the same update plus the cold run's history rows, in one statement) and the
naive baseline (one ``UPDATE`` per row in one transaction), each after the same reset. The
figures go to ``--out`` as JSON. The child imports nothing of the benchmark's heavy parts (no
fleet, no sandbox, no plotting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg

from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once
from cost_sync.runtime import logs
from cost_sync.settings import Settings
from cost_sync.wiring import open_resources
from figures import CUSTOM_PLAN_EXECUTIONS, PHASES, RunFigures, SizeFigures

#: The write floor: the same final values, one statement, nothing else.
FLOOR = """
UPDATE vps_instances v SET approximate_cost = n.cost
FROM unnest($1::uuid[], $2::numeric[]) AS n(id, cost)
WHERE v.id = n.id
"""
#: The history floor: what a cold run writes (each changed row's value and ``updated``, and one
#: history row per change with the same columns as cost-sync's), in one plain statement: one array
#: per column, no shared price bases, no snapshot join, no status filter.
HISTORY_FLOOR = """
WITH new AS (
    SELECT *
    FROM unnest($2::uuid[], $3::numeric[], $4::text[], $5::numeric[], $6::text[], $7::text[],
                $8::numeric[], $9::int[], $10::bool[], $11::int[], $12::text[], $13::text[])
         AS n(id, cost, hostwinds_instance_id, old_cost, source, cycle, cycle_price, months,
              hourly_ceiling, product_id, product_name, cycle_alias)
),
changed AS (
    UPDATE vps_instances v SET approximate_cost = new.cost, updated = now()
    FROM new
    WHERE v.id = new.id
    RETURNING new.*
)
INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, old_cost, new_cost,
                               source, cycle, cycle_price, months, hourly_ceiling, product_id,
                               product_name, cycle_alias)
SELECT $1, id, hostwinds_instance_id, old_cost, cost, source, cycle, cycle_price, months,
       hourly_ceiling, product_id, product_name, cycle_alias
FROM changed
"""
#: The history rows of the last run that wrote, one array per column of HISTORY_FLOOR's $2...
LAST_HISTORY = """
SELECT vps_instance_id, new_cost, hostwinds_instance_id, old_cost, source, cycle, cycle_price,
       months, hourly_ceiling, product_id, product_name, cycle_alias
FROM cost_sync_history
WHERE run_id = (SELECT id FROM cost_sync_runs WHERE outcome = 'succeeded' AND updated > 0
                ORDER BY finished DESC LIMIT 1)
ORDER BY vps_instance_id
"""
HISTORY_COLUMNS = 12
#: The naive baseline, executed once per row.
NAIVE = "UPDATE vps_instances SET approximate_cost = $2 WHERE id = $1"
#: The cold starting values: every row unpriced, so every priced row changes.
RESET = "UPDATE vps_instances SET approximate_cost = NULL WHERE approximate_cost IS NOT NULL"
#: ... and no cached price, so a cold run asks every service, as a first run does.
EMPTY_CACHE = "TRUNCATE cost_sync_price_observations"
#: A fingerprint of every row's stored value, to check the floor and naive end where cost-sync did.
VALUES_CHECKSUM = """
SELECT md5(string_agg(id::text || '=' || coalesce(approximate_cost::text, '-'), ',' ORDER BY id))
FROM vps_instances
"""
FINAL_VALUES = """
SELECT id, approximate_cost FROM vps_instances WHERE approximate_cost IS NOT NULL ORDER BY id
"""
#: How old the cached prices are on average (seconds; NULL when the cache is empty).
CACHE_AGE = """
SELECT avg(extract(epoch FROM clock_timestamp() - observed))::float8 FROM cost_sync_price_observations
"""
_MB = 1024 * 1024
#: The database URL (it may hold a password) and the sandbox's API key reach the child in its
#: environment, not its command line; the key so, too, that the child need not import the sandbox
#: (uvicorn, starlette) and count it in its RSS.
DATABASE_URL_ENV = "COST_SYNC_BENCH_CHILD_DATABASE_URL"
API_KEY_ENV = "COST_SYNC_BENCH_SANDBOX_API_KEY"
#: The URL cost-sync's own runs connect with (through PgBouncer with ``bench/run.py --pgbouncer``);
#: absent: the database URL. The reference statements always use the direct one.
RUN_DATABASE_URL_ENV = "BENCH_RUN_DATABASE_URL"


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / _MB
    return None


def rss_mb() -> float:
    """This process's resident set size now, in MB."""
    current = _status_mb("VmRSS")
    if current is None:
        import psutil

        current = psutil.Process().memory_info().rss / _MB
    return current


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM on Linux, else ru_maxrss."""
    peak = _status_mb("VmHWM")
    if peak is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = maxrss / _MB if sys.platform == "darwin" else maxrss * 1024 / _MB
    return peak


async def reset(conn: asyncpg.Connection) -> None:
    """Back to the cold starting values and an empty price cache, dead tuples vacuumed."""
    await conn.execute(RESET)
    await conn.execute(EMPTY_CACHE)
    await conn.execute("VACUUM ANALYZE vps_instances")


async def _history_rows(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM cost_sync_history"))


async def timed_sync(
    conn: asyncpg.Connection, client: HostwindsClient, pool: asyncpg.Pool, settings: Settings
) -> RunFigures:
    """One ``run_once``, timed, with the rows it physically rewrote counted on the server side."""
    await conn.execute("DROP TABLE IF EXISTS bench_ctid")
    await conn.execute("CREATE TEMP TABLE bench_ctid AS SELECT id, ctid::text AS c FROM vps_instances")
    history_before = await _history_rows(conn)
    age = await conn.fetchval(CACHE_AGE)
    started = time.perf_counter()
    result = await run_once(client=client, pool=pool, settings=settings, request=RunRequest(trigger="bench"))
    wall = time.perf_counter() - started
    report = result.report
    del result  # its outcomes are N objects: not kept beyond the run, as in the daemon
    rewritten = await conn.fetchval(
        "SELECT count(*) FROM vps_instances v JOIN bench_ctid b USING (id) WHERE v.ctid::text <> b.c"
    )
    phases = {name: float(report.phase_seconds.get(name, 0.0)) for name in PHASES}
    return RunFigures(
        wall=wall,
        hostwinds=phases["hostwinds"],
        pricing=phases["pricing"],
        database=phases["database"],
        other=max(0.0, wall - sum(phases.values())),
        rows_in_scope=report.rows_in_scope,
        matched=report.matched,
        changed=report.changed,
        updated=report.updated,
        unpriced=sum(report.unpriced_by_reason.values()),
        hostwinds_calls=dict(report.hostwinds_calls),
        history_rows_added=await _history_rows(conn) - history_before,
        rows_rewritten=int(rewritten),
        price_cache=report.price_cache.model_dump(),
        cache_age_seconds=None if age is None else float(age),  # float-ok: seconds
    )


async def timed_floor(conn: asyncpg.Connection, ids: list[uuid.UUID], costs: list[Decimal]) -> float:
    """Seconds to apply ``costs`` with the one-statement write floor."""
    started = time.perf_counter()
    await conn.execute(FLOOR, ids, costs)
    return time.perf_counter() - started


async def timed_history_floor(conn: asyncpg.Connection, columns: list[list[object]]) -> float:
    """Seconds to apply the cold run's values and history rows with the one-statement history floor."""
    started = time.perf_counter()
    await conn.execute(HISTORY_FLOOR, uuid.uuid4(), *columns)
    return time.perf_counter() - started


async def timed_naive(conn: asyncpg.Connection, ids: list[uuid.UUID], costs: list[Decimal]) -> float:
    """Seconds to apply ``costs`` with one UPDATE per row (a loop of execute, not executemany)."""
    started = time.perf_counter()
    async with conn.transaction():
        for row_id, cost in zip(ids, costs, strict=True):
            await conn.execute(NAIVE, row_id, cost)
    return time.perf_counter() - started


async def measure(
    *,
    n: int,
    database_url: str,
    sandbox_url: str,
    api_key: str,
    repeat: int,
    floor_repeat: int,
    naive_repeat: int,
    late_run: bool,
) -> SizeFigures:
    """Every figure of one fleet size (see the module docstring for the order)."""
    rss_start = rss_mb()
    settings = Settings.model_validate(
        {
            "hostwinds": {
                "url": sandbox_url,
                "api_key": api_key,
                "requests_per_second": 0,  # rate limit off: the sandbox is local
                "max_concurrency": 16,
            },
            "database": {"url": os.environ.get(RUN_DATABASE_URL_ENV) or database_url},
            # A cold sync is measured as one whole run: at 100,000 the default 300 s budget would
            # end it early and leave the rest pending for the "warm" run. Budgeted runs are
            # measured by bench/cache_figures.py.
            "sync": {"max_run_seconds": 86400},
        }
    )
    conn = await asyncpg.connect(database_url)
    try:
        async with open_resources(settings) as (client, pool):
            first = await conn.fetchval("SELECT hostwinds_instance_id FROM vps_instances ORDER BY id LIMIT 1")
            await run_once(
                client=client,
                pool=pool,
                settings=settings,
                request=RunRequest(trigger="bench-warmup", targets=[first], dry_run=True),
            )
            cold: list[RunFigures] = []
            for _ in range(repeat):
                await reset(conn)
                cold.append(await timed_sync(conn, client, pool, settings))
            late: RunFigures | None = None
            if late_run:
                for _ in range(CUSTOM_PLAN_EXECUTIONS - repeat):
                    await reset(conn)
                    await run_once(
                        client=client,
                        pool=pool,
                        settings=settings,
                        request=RunRequest(trigger="bench-filler"),
                    )
                await reset(conn)
                late = await timed_sync(conn, client, pool, settings)
            await conn.execute("VACUUM ANALYZE vps_instances")
            warm = [await timed_sync(conn, client, pool, settings) for _ in range(repeat)]
        peak = peak_rss_mb()

        expected = await conn.fetchval(VALUES_CHECKSUM)
        final = await conn.fetch(FINAL_VALUES)
        ids = [record["id"] for record in final]
        costs = [record["approximate_cost"] for record in final]
        del final
        history = await conn.fetch(LAST_HISTORY)
        columns = [list(column) for column in zip(*history, strict=True)] or [
            [] for _ in range(HISTORY_COLUMNS)
        ]
        del history
        await conn.execute(FLOOR, [], [])  # prepared once, untimed
        await conn.execute(HISTORY_FLOOR, uuid.UUID(int=0), *([] for _ in range(HISTORY_COLUMNS)))
        await conn.execute(NAIVE, uuid.UUID(int=0), None)
        floor: list[float] = []
        for _ in range(floor_repeat):
            await reset(conn)
            floor.append(await timed_floor(conn, ids, costs))
        floor_same = await conn.fetchval(VALUES_CHECKSUM) == expected
        history_floor: list[float] = []
        for _ in range(floor_repeat):
            await reset(conn)
            history_floor.append(await timed_history_floor(conn, columns))
        history_floor_same = await conn.fetchval(VALUES_CHECKSUM) == expected
        naive: list[float] = []
        for _ in range(naive_repeat):
            await reset(conn)
            naive.append(await timed_naive(conn, ids, costs))
        naive_same = await conn.fetchval(VALUES_CHECKSUM) == expected
    finally:
        await conn.close()
    return SizeFigures(
        n=n,
        cold=cold,
        warm=warm,
        late=late,
        floor_seconds=floor,
        history_floor_seconds=history_floor,
        history_floor_rows=len(columns[0]),
        naive_seconds=naive,
        rows_written=len(ids),
        floor_same_values=floor_same,
        history_floor_same_values=history_floor_same,
        naive_same_values=naive_same,
        rss_start_mb=rss_start,
        peak_rss_mb=peak,
        max_price_age_seconds=settings.sync.max_price_age_seconds,
    )


def main() -> int:
    """Measure one fleet size and write its figures as JSON to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--sandbox-url", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--floor-repeat", type=int, default=3)
    parser.add_argument("--naive-repeat", type=int, default=3)
    parser.add_argument("--late", action="store_true", help="also time the 6th write on the connection")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    # As the daemon logs when stderr is not a terminal; run.py sends stderr to a file.
    logs.configure(level="info", json_logs=True)
    figures = asyncio.run(
        measure(
            n=args.n,
            database_url=os.environ[DATABASE_URL_ENV],
            sandbox_url=args.sandbox_url,
            api_key=os.environ[API_KEY_ENV],
            repeat=args.repeat,
            floor_repeat=args.floor_repeat,
            naive_repeat=args.naive_repeat,
            late_run=args.late,
        )
    )
    args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
