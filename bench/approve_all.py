"""``cost-sync approve --all`` at N held changes, against a dry run of the same fleet as the baseline.

    .venv/bin/python bench/approve_all.py --n 5000 --n 15000

The server is ``$COST_SYNC_BENCH_DATABASE_URL`` (default the machine's PostgreSQL); each N gets a
fresh database of N ``active`` rows valued 1.00, a first sync against an in-process sandbox fleet
holds every change (each is more than x1.5), then ``approve --all`` is timed, run lock held. The
baseline is a ``--dry-run`` sync of the same rows in the same process: approve re-prices every held
row through such a dry run, so a ratio that stays flat as N grows says approve is linear.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cost_sync.cli import main as cli
from cost_sync.hostwinds.sandbox import SandboxServer, generate_fleet
from cost_sync.runtime import logs
from cost_sync.store.migrate import migrate, sql_dir

SERVER = os.environ.get("COST_SYNC_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def measure(n: int) -> tuple[float, float, int]:
    """(approve --all seconds, dry-run seconds, changes held) at n rows."""
    name = f"cs_bench_approve_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(SERVER)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = _with_database(SERVER, name)
    try:
        conn = await asyncpg.connect(url)
        await conn.execute((sql_dir() / "fixtures" / "vps_instances.sql").read_text(encoding="utf-8"))
        await migrate(conn)
        fleet = generate_fleet(n)
        await conn.execute(
            "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost)"
            " SELECT (100000 + i)::text, 'active', 1.00 FROM generate_series(0, $1 - 1) AS i",
            n,
        )
        async with SandboxServer(fleet) as sandbox:
            env = {
                "COST_SYNC_DATABASE_URL": url,
                "COST_SYNC_HOSTWINDS_URL": sandbox.url,
                "COST_SYNC_HOSTWINDS_API_KEY": fleet.api_key,
                "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
                "COST_SYNC_HOSTWINDS_MAX_CONCURRENCY": "16",
                "COST_SYNC_MAX_RUN_SECONDS": "86400",
                "COST_SYNC_LOG_LEVEL": "error",
            }
            os.environ.update(env)
            with contextlib.redirect_stdout(io.StringIO()):
                assert await asyncio.to_thread(cli.main, ["--once"]) == 0
                held = int(await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes"))
                t0 = time.perf_counter()
                assert await asyncio.to_thread(cli.main, ["--once", "--dry-run"]) == 0
                dry = time.perf_counter() - t0
                t0 = time.perf_counter()
                code = await asyncio.to_thread(cli.main, ["approve", "--all"])
                approve = time.perf_counter() - t0
            assert code == 0, code
            assert await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 0
        await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return approve, dry, held


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", required=True)
    args = parser.parse_args()
    logs.configure(level="error", json_logs=True)
    print("n\theld\tapprove_s\tdry_run_s\tratio")
    for n in args.n:
        approve, dry, held = await measure(n)
        print(f"{n}\t{held}\t{approve:.2f}\t{dry:.2f}\t{approve / dry:.2f}")  # float-ok: seconds


if __name__ == "__main__":
    asyncio.run(main())
