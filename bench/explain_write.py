"""Where a cold sync's database phase goes: the evidence behind docs/performance.md.

    python bench/explain_write.py [--n 10000] [--database-url URL]

Not part of the benchmark's figures; an investigation tool. In a fresh database seeded as the
benchmark seeds it, it makes one cold run (against an in-process sandbox) and keeps its outcomes,
then shows:

1. the reads: ``Store.read_rows`` and ``Store.read_observations`` (every matched service, from the
   cache the cold run filled), each against its query alone (the rest builds the values);
2. the cost of sending the write's parameters vs the floor's two arrays (a statement that only
   counts NULLs among them);
3. ``EXPLAIN (ANALYZE, BUFFERS)`` of the write floor, of the history floor (the same update plus
   the same history rows in one plain statement) and of cost-sync's write statement, each in a
   transaction rolled back;
4. ``Store.commit_run`` executed 8 times on one connection (reset in between): PostgreSQL plans a
   cached prepared statement with its parameters 5 times, then may switch to a generic plan; the
   timings show whether executions 6 to 8 keep their time. Then the write's generic plan
   (``EXPLAIN`` under ``plan_cache_mode = force_generic_plan``): what a cached plan would do.

The store's own methods run on a stand-in for its pool that hands out one connection and records
every statement (:class:`OneConnection`), so the tool follows the named queries of
``sql/queries/sync.sql`` as they change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

import pgdb
from child import FLOOR, HISTORY_FLOOR, LAST_HISTORY, reset
from cost_sync.domain.models import Estimate, RowOutcome, RunReport
from cost_sync.hostwinds.sandbox import SANDBOX_API_KEY, SandboxServer
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once
from cost_sync.runtime import logs
from cost_sync.settings import Settings
from cost_sync.store import postgres as store
from cost_sync.wiring import open_resources
from fleet import generate_fleet, seed_rows

Statement = tuple[str, tuple[Any, ...]]


class OneConnection:
    """Stands in for the store's pool: one connection, and each statement's SQL and arguments recorded."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[Statement] = []

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[OneConnection]:
        """As ``Pool.acquire``: always this connection."""
        yield self

    def transaction(self) -> Any:
        """As ``Connection.transaction`` (nested: a savepoint)."""
        return self.conn.transaction()

    def is_closed(self) -> bool:
        """As ``Connection.is_closed``."""
        return bool(self.conn.is_closed())

    async def fetch(self, sql: str, *args: Any, timeout: float | None = None) -> list[asyncpg.Record]:
        """As ``Connection.fetch``."""
        self.statements.append((sql, args))
        return await self.conn.fetch(sql, *args, timeout=timeout)

    async def fetchval(self, sql: str, *args: Any, timeout: float | None = None) -> Any:
        """As ``Connection.fetchval``."""
        self.statements.append((sql, args))
        return await self.conn.fetchval(sql, *args, timeout=timeout)

    async def execute(self, sql: str, *args: Any, timeout: float | None = None) -> str:
        """As ``Connection.execute``."""
        self.statements.append((sql, args))
        return await self.conn.execute(sql, *args, timeout=timeout)


def on(conn: asyncpg.Connection) -> tuple[store.Store, OneConnection]:
    """A Store whose every statement runs on ``conn``, and the recorder of those statements."""
    recorder = OneConnection(conn)
    return store.Store(recorder), recorder  # type: ignore[arg-type]


def final_values(outcomes: Sequence[RowOutcome]) -> tuple[list[uuid.UUID], list[Decimal]]:
    """The ids and new values of the rows a cold run changes: what the floor writes."""
    changed = [(o.row.id, o.result.monthly) for o in outcomes if isinstance(o.result, Estimate) and o.changed]
    return [row_id for row_id, _ in changed], [cost for _, cost in changed]


async def _median_ms(action: Callable[[], Awaitable[object]], times: int = 5) -> float:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        await action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


def _report(run_id: uuid.UUID) -> Callable[[int], RunReport]:
    def finish(updated: int) -> RunReport:
        now = datetime.now(UTC)
        return RunReport(
            run_id=run_id,
            trigger="explain",
            outcome="succeeded",
            started_at=now,
            finished_at=now,
            updated=updated,
        )

    return finish


async def commit(conn: asyncpg.Connection, outcomes: Sequence[RowOutcome], statuses: Sequence[str]) -> int:
    """``Store.commit_run`` of ``outcomes`` on ``conn`` (committed); the rows it updated."""
    run_store, _ = on(conn)
    run_id = uuid.uuid4()
    report = await run_store.commit_run(run_id, outcomes, statuses=statuses, finish=_report(run_id))
    return report.updated


async def capture_write(
    conn: asyncpg.Connection, outcomes: Sequence[RowOutcome], statuses: Sequence[str]
) -> list[Statement]:
    """The statements ``Store.commit_run`` sends for ``outcomes`` (run and rolled back)."""
    run_store, recorder = on(conn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        run_id = uuid.uuid4()
        await run_store.commit_run(run_id, outcomes, statuses=statuses, finish=_report(run_id))
    finally:
        await transaction.rollback()
    return recorder.statements


async def _send_only(conn: asyncpg.Connection, sql: str, args: Sequence[Any]) -> float:
    """Median ms of a statement that receives ``sql``'s parameters and only counts their NULLs."""
    parameters = (await conn.prepare(sql)).get_parameters()
    types = [await conn.fetchval("SELECT format_type($1::oid, NULL)", p.oid) for p in parameters]
    counting = "SELECT num_nulls(" + ", ".join(f"${i}::{t}" for i, t in enumerate(types, 1)) + ")"
    return await _median_ms(lambda: conn.fetchval(counting, *args))


async def _explain(
    conn: asyncpg.Connection, title: str, before: Sequence[Statement], sql: str, args: Any
) -> None:
    await reset(conn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        for statement, statement_args in before:
            await conn.execute(statement, *statement_args)
        plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    finally:
        await transaction.rollback()
    print(f"\n== 3. EXPLAIN (ANALYZE, BUFFERS): {title}")
    print("\n".join(record[0] for record in plan))


async def _reads(conn: asyncpg.Connection, statuses: list[str], serviceids: list[int]) -> None:
    run_store, recorder = on(conn)
    print("\n== 1. the reads (median of 5)")
    for name, action in (
        ("read_rows", lambda s: s.read_rows(statuses)),
        (f"read_observations of {len(serviceids):,} services", lambda s: s.read_observations(serviceids)),
    ):
        await action(run_store)
        sql, args = recorder.statements[-1]
        query = await _median_ms(lambda sql=sql, args=args: conn.fetch(sql, *args))
        whole = await _median_ms(lambda action=action: action(on(conn)[0]))
        print(f"Store.{name}: {whole:.1f} ms, of which its query {query:.1f} ms")


async def findings(
    conn: asyncpg.Connection, outcomes: list[RowOutcome], statuses: list[str], serviceids: list[int]
) -> None:
    """Print the four findings (see the module docstring)."""
    await _reads(conn, statuses, serviceids)

    write_query = store.queries("sync")["write_estimates"]
    statements = await capture_write(conn, outcomes, statuses)
    at = next(i for i, (sql, _) in enumerate(statements) if sql == write_query)
    before, (write_sql, write_args) = statements[:at], statements[at]
    ids, costs = final_values(outcomes)
    print("\n== 2. sending the parameters only (median of 5)")
    print(
        f"the write's {len(write_args)} parameters: {await _send_only(conn, write_sql, write_args):.1f} ms; "
        f"the floor's 2 arrays: {await _send_only(conn, FLOOR, (ids, costs)):.1f} ms"
    )
    if before:
        print("statements the store sends before its write: " + "; ".join(sql for sql, _ in before))

    # The history floor writes the history rows of a real commit of these outcomes.
    await reset(conn)
    await commit(conn, outcomes, statuses)
    history = await conn.fetch(LAST_HISTORY)
    columns = [list(column) for column in zip(*history, strict=True)]
    await _explain(conn, "write floor", [], FLOOR, (ids, costs))
    await _explain(conn, "history floor", [], HISTORY_FLOOR, (uuid.uuid4(), *columns))
    await _explain(conn, "cost-sync's write", before, write_sql, write_args)

    print("\n== 4. Store.commit_run, 8 times on one connection")
    for execution in range(1, 9):
        await reset(conn)
        started = time.perf_counter()
        written = await commit(conn, outcomes, statuses)
        print(f"execution {execution}: {(time.perf_counter() - started) * 1000:.0f} ms ({written:,} rows)")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE generic_write AS {write_sql}")
        nulls = ", ".join(["NULL"] * len(write_args))
        plan = await conn.fetch(f"EXPLAIN EXECUTE generic_write({nulls})")
        await conn.execute("DEALLOCATE generic_write")
    except asyncpg.PostgresError as exc:
        print(f"\n(no generic plan to show: {exc})")
        return
    finally:
        await conn.execute("RESET plan_cache_mode")
    print("\n== 4. the write's generic plan (EXPLAIN under plan_cache_mode = force_generic_plan)")
    print("\n".join(record[0] for record in plan))


async def investigate(server_url: str, n: int) -> None:
    """Seed a database for ``n`` instances, compute a cold run's outcomes, print the findings."""
    fleet = generate_fleet(n)
    name = f"cost_sync_explain_{os.getpid()}_{n}"
    url = await pgdb.create(server_url, name, seed_rows(fleet))
    try:
        async with SandboxServer(fleet) as sandbox:
            settings = Settings.model_validate(
                {
                    "hostwinds": {
                        "url": sandbox.url,
                        "api_key": SANDBOX_API_KEY,
                        "requests_per_second": 0,
                        "max_concurrency": 16,
                    },
                    "database": {"url": url},
                }
            )
            async with open_resources(settings) as (client, pool):
                # A real cold run: it fills the price cache that section 1 reads.
                result = await run_once(
                    client=client, pool=pool, settings=settings, request=RunRequest(trigger="explain")
                )
        del fleet
        print(f"N = {n:,}: {len(final_values(result.outcomes)[0]):,} rows change in a cold run")
        # Every matched service: what a warm run reads from the cache the cold run filled.
        serviceids = sorted({o.instance.serviceid for o in result.outcomes if o.instance is not None})
        conn = await asyncpg.connect(url)
        try:
            await findings(conn, result.outcomes, list(settings.sync.statuses), serviceids)
        finally:
            await conn.close()
    finally:
        await pgdb.drop(server_url, name)


def main() -> int:
    """Parse the command line and investigate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="fleet size (default: 10000)")
    parser.add_argument("--database-url", metavar="URL", help="as for bench/run.py")
    args = parser.parse_args()
    logs.configure(level="error")

    async def go() -> None:
        async with pgdb.server(args.database_url) as server:
            await investigate(server.url, args.n)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
