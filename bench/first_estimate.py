"""Time to the first complete estimate: a cold daemon at a polite rate, until every row has a value.

The real daemon (``cost_sync.daemon.service.Daemon``, in-process, as ``cost-sync run`` builds it) starts
on an empty cache against the SANDBOX API serving ``generate_fleet(N)`` (default 10,000), with
``requests_per_second`` 2 (Hostwinds' polite default) and the default ``max_run_seconds`` 300, in a
fresh database whose N rows have no value. The database is polled every 0.25 s. Reported:

- **first complete estimate**: seconds from the daemon's start to the moment every matched,
  priceable row has a value (priceable: priced by a fully refined run; computed offline from the
  same fleet with ``cost_sync.domain.matching.price_rows``), and how many of those values are provisional;
- **refine everything**: measured until the first catch-up run has committed, then projected:
  the services still to ask over the catch-up run's measured rate (services asked per second of
  run wall time, commit included). At 2 requests/s refining 10,000 services takes over 80 minutes,
  so it is a projection from a measured rate, labelled as such.

Run: ``python bench/first_estimate.py [--n 10000] [--rps 2] [--database-url URL] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from apscheduler.triggers.interval import IntervalTrigger

import pgdb
from cache_figures import settings_for
from cost_sync.daemon.service import Daemon
from cost_sync.domain.matching import price_rows
from cost_sync.domain.models import Estimate
from cost_sync.hostwinds.sandbox import SandboxServer
from cost_sync.wiring import open_resources
from fleet import generate_fleet, pricing_inputs, seed_rows

POLL_SECONDS = 0.25


def priceable(n: int) -> int:
    """Rows a fully refined run prices (every service's own answer in hand)."""
    p = pricing_inputs(n)
    outcomes = price_rows(
        p.rows,
        p.instances,
        overrides={},
        cycle_prices=p.cycle_prices,
        price_lists=p.price_lists,
        managed=False,
    )
    return sum(1 for o in outcomes if isinstance(o.result, Estimate))


async def measure(n: int, rps: float, server_url: str) -> dict[str, Any]:
    """One cold start of the daemon; the figures of the module docstring."""
    target = priceable(n)
    fleet = generate_fleet(n)
    name = f"cost_sync_bench_first_{n}"
    db_url = await pgdb.create(server_url, name, seed_rows(fleet))
    try:
        async with SandboxServer(fleet) as sandbox:
            settings = settings_for(
                sandbox.url,
                db_url,
                hostwinds={"requests_per_second": rps, "max_concurrency": 4},
                sync={"shutdown_grace_seconds": 0},
                admin={"listen": "127.0.0.1:0"},
            )
            conn = await asyncpg.connect(db_url)
            try:
                async with open_resources(settings) as (client, pool):
                    daemon = Daemon(settings, client, pool, trigger=IntervalTrigger(days=365))
                    stop = asyncio.Event()
                    started = time.perf_counter()
                    task = asyncio.create_task(daemon.serve(stop, initial_sync=True))
                    first_complete: float | None = None
                    runs: list[dict[str, Any]] = []
                    seen: set[Any] = set()
                    try:
                        while len(runs) < 2:
                            if task.done():
                                await task
                                raise RuntimeError("the daemon stopped")
                            await asyncio.sleep(POLL_SECONDS)
                            valued = await conn.fetchval(
                                "SELECT count(*) FROM vps_instances WHERE approximate_cost IS NOT NULL"
                            )
                            if first_complete is None and valued >= target:
                                first_complete = time.perf_counter() - started
                            for record in list(daemon.runner.runs.values()):
                                report = record.report
                                if report is None or record.run_id in seen:
                                    continue
                                seen.add(record.run_id)
                                runs.append(
                                    {
                                        "trigger": record.trigger,
                                        "finished_after_seconds": round(time.perf_counter() - started, 2),
                                        "duration_seconds": round(report.duration_seconds, 2),
                                        "asked": report.price_cache.asked,
                                        "pending": report.price_cache.pending,
                                        "provisional": report.provisional,
                                        "updated": report.updated,
                                    }
                                )
                    finally:
                        stop.set()
                        await task
            finally:
                await conn.close()
    finally:
        await pgdb.drop(server_url, name)
    first, catchup = runs[0], runs[1]
    rate = catchup["asked"] / catchup["duration_seconds"] if catchup["duration_seconds"] else math.inf
    left = catchup["pending"]
    projected = catchup["finished_after_seconds"] + (left / rate if rate else math.inf)
    return {
        "n": n,
        "requests_per_second": rps,
        "max_run_seconds": settings.sync.max_run_seconds,
        "priceable_rows": target,
        "first_complete_estimate_seconds": None if first_complete is None else round(first_complete, 2),
        "first_run": first,
        "first_catchup_run": catchup,
        "refine_rate_services_per_second": round(rate, 3),
        "refine_all_projected_seconds": round(projected, 1),
    }


def main() -> int:
    """Measure, print the figures as JSON, and write them to ``--out`` when given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rps", type=float, default=2.0)
    parser.add_argument("--database-url")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    async def run() -> dict[str, Any]:
        async with pgdb.server(args.database_url) as server:
            return await measure(args.n, args.rps, server.url)

    figures = asyncio.run(run())
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
