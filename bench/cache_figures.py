"""The price cache's figures of one fleet size, in a process of its own, against an in-process sandbox.

Started by ``bench/run.py`` (not by hand) once ``bench/child.py`` has measured the same database::

    COST_SYNC_BENCH_CHILD_DATABASE_URL=URL python bench/cache_figures.py --n N --out FILE

Each measurement starts cold (every row unpriced, the observation cache empty) and serves the
generated fleet from a :class:`~cost_sync.hostwinds.sandbox.SandboxServer` in this process, so that the
benchmark can change the fleet and inject faults exactly when it means to:

1. **outage**: a cold run (rate limit off) during which ``get_billingcycle_prices`` starts to answer
   503 once half the services are answered, so the run fails after its retries; then a normal run.
   Both runs' asks over the services: about 1 when the failed run's answers were kept.
2. **simulation**: a cold run, then ``--hours`` hourly runs on a virtual clock (``SyncRun(now=...)``)
   with the default ``max_price_age_seconds``; before each, a share of the instances change their
   billing cycle or plan in the fleet. Each run's asks against 1.5 x N x interval / max age plus the
   instances changed.
3. **resync**: the daemon in-process (as ``cost-sync run`` builds it) against the sandbox at
   ``requests_per_second`` 20, ``max_run_seconds`` 15; a few seconds into its cold start-up sync,
   ``POST /resync {"instances": [id]}`` for the instance the cold sync would ask last; the time from
   the request to the end of its run.

Counts are what the figures are about; the one timing (3) is dominated by the rate limit, not by
this process sharing its event loop with the sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from apscheduler.triggers.interval import IntervalTrigger

from child import DATABASE_URL_ENV, RUN_DATABASE_URL_ENV, reset
from cost_sync.daemon.runs import RunState
from cost_sync.daemon.service import Daemon
from cost_sync.errors import CostSyncError
from cost_sync.hostwinds.sandbox import SANDBOX_API_KEY, Faults, SandboxServer
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import Progress, SyncRun, run_once
from cost_sync.runtime import logs
from cost_sync.settings import Settings
from cost_sync.store.postgres import Store
from cost_sync.wiring import open_resources
from figures import (
    CacheFigures,
    OutageFigures,
    ResyncFigures,
    SimulatedRun,
    SimulationFigures,
)
from fleet import generate_fleet, hostwinds_id

CYCLE_PRICES = "get_billingcycle_prices"
#: More 503 answers than any run can consume: the outage lasts until the benchmark lifts it.
OUTAGE_FAILURES = 10**9
#: The simulation's schedule and what changes in the fleet before each hourly run.
HOURS = 48
INTERVAL_SECONDS = 3600.0
CHANGE_SHARE = 0.002
#: The bound's factor: refreshes spread evenly would be N x interval / max age per run.
SPREAD_FACTOR = 1.5
#: A fixed virtual start: the runs' observations carry virtual times, in a database of their own.
VIRTUAL_START = datetime(2026, 12, 1, tzinfo=UTC)
#: The resync measurement: a rate-limited Hostwinds and a short budget, as in the issue.
RESYNC_REQUESTS_PER_SECOND = 20.0
RESYNC_MAX_RUN_SECONDS = 15.0
RESYNC_AFTER_SECONDS = 5.0
RESYNC_WAIT_SECONDS = 300.0
_TOKEN = "bench-admin-token"  # noqa: S105 - a throw-away token for a daemon on 127.0.0.1
_BILLING_CYCLES = ("Monthly", "Quarterly", "Semi-Annually", "Annually", "Biennially", "Triennially")


def settings_for(sandbox_url: str, database_url: str, **sections: dict[str, Any]) -> Settings:
    """The benchmark's settings (rate limit off, 16 in flight) with ``sections`` merged in."""
    data: dict[str, dict[str, Any]] = {
        "hostwinds": {
            "url": sandbox_url,
            "api_key": SANDBOX_API_KEY,
            "requests_per_second": 0,
            "max_concurrency": 16,
        },
        "database": {"url": database_url},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


async def _count(conn: asyncpg.Connection, sql: str) -> int:
    return int(await conn.fetchval(sql))


async def outage(sandbox: SandboxServer, settings: Settings, conn: asyncpg.Connection) -> OutageFigures:
    """A cold run failing halfway through its asking (503 after the retries), then a normal run."""
    await reset(conn)
    sandbox.faults = Faults()
    requests_before = sandbox.requests[CYCLE_PRICES]
    at_outage: list[int] = []

    def follow(progress: Progress) -> None:
        if not at_outage and progress.asked * 2 >= progress.to_ask:
            at_outage.append(progress.asked)
            sandbox.faults = Faults(fail_next=OUTAGE_FAILURES, actions=frozenset({CYCLE_PRICES}))

    async with open_resources(settings) as (client, pool):
        before = client.calls.get(CYCLE_PRICES, 0)
        progress = Progress(listener=follow)
        try:
            await run_once(
                client=client,
                pool=pool,
                settings=settings,
                request=RunRequest(trigger="bench-outage"),
                progress=progress,
            )
            first_outcome, first_error = "succeeded", None
        except CostSyncError as exc:
            first_outcome, first_error = "failed", str(exc)
        finally:
            sandbox.faults = Faults()
        services = progress.to_ask
        first_asks = client.calls.get(CYCLE_PRICES, 0) - before
        valued = await _count(conn, "SELECT count(*) FROM vps_instances WHERE approximate_cost IS NOT NULL")
        kept = await _count(conn, "SELECT count(*) FROM cost_sync_price_observations")
        second = await run_once(
            client=client, pool=pool, settings=settings, request=RunRequest(trigger="bench-after-outage")
        )
        second_asks = client.calls.get(CYCLE_PRICES, 0) - before - first_asks
    total = first_asks + second_asks
    return OutageFigures(
        services=services,
        answered_at_outage=at_outage[0] if at_outage else 0,
        first_outcome=first_outcome,
        first_error=first_error,
        rows_valued_after_failure=valued,
        observations_kept=kept,
        first_asks=first_asks,
        second_asks=second_asks,
        total_asks=total,
        http_requests=sandbox.requests[CYCLE_PRICES] - requests_before,
        second_outcome=second.report.outcome,
        second_unpriced_pending=second.report.price_cache.pending,
        asks_per_service=total / services if services else 0.0,
    )


def change_instances(sandbox: SandboxServer, rng: random.Random, count: int) -> int:
    """Give ``count`` random instances another billing cycle or plan in the served fleet."""
    fleet = sandbox.fleet
    instances = list(fleet.instances)
    cycle_prices = dict(fleet.cycle_prices)
    plans = [plan for plan in fleet.plans if not plan.get("managed", False)]
    for index in rng.sample(range(len(instances)), count):
        new = dict(instances[index])
        if rng.random() < 0.5:
            new["billingcycle"] = rng.choice([c for c in _BILLING_CYCLES if c != new["billingcycle"]])
            new["hourly"] = 0
        else:
            plan = rng.choice([p for p in plans if str(p["id"]) != str(new["product_id"])])
            as_text = isinstance(new["product_id"], str)
            new["product_id"] = str(plan["id"]) if as_text else plan["id"]
            new["product_name"] = plan["name"]
            new["disk_type"] = plan["drive_type"]
            # Hostwinds' per-service prices were for the old plan: from now on the price list applies.
            cycle_prices.pop(int(new["serviceid"]), None)
        instances[index] = new
    # Assigning the fleet drops the sandbox's cached get_instances body.
    sandbox.fleet = dataclasses.replace(fleet, instances=instances, cycle_prices=cycle_prices)
    return count


async def simulate(
    sandbox: SandboxServer, settings: Settings, conn: asyncpg.Connection, *, n: int, hours: int
) -> SimulationFigures:
    """A cold run, then ``hours`` hourly runs on a virtual clock with a few instances changed before each."""
    await reset(conn)
    original = sandbox.fleet
    rng = random.Random(f"cost-sync-bench-simulation-{n}")
    changes = max(1, round(CHANGE_SHARE * n))
    max_age = settings.sync.max_price_age_seconds
    clock = [VIRTUAL_START]
    runs: list[SimulatedRun] = []
    try:
        async with open_resources(settings) as (client, pool):
            store = Store(pool)

            async def run(trigger: str) -> Any:
                return await SyncRun(
                    client=client,
                    store=store,
                    settings=settings,
                    request=RunRequest(trigger=trigger),
                    now=lambda: clock[0],
                ).execute()

            cold = await run("bench-simulation-cold")
            services = cold.report.price_cache.asked
            for hour in range(1, hours + 1):
                changed = change_instances(sandbox, rng, changes)
                clock[0] = VIRTUAL_START + timedelta(seconds=hour * INTERVAL_SECONDS)
                started = time.perf_counter()
                result = await run(f"bench-simulation-{hour}")
                cache = result.report.price_cache
                runs.append(
                    SimulatedRun(
                        hour=hour,
                        changed_instances=changed,
                        asked=cache.asked,
                        reasons=dict(cache.reasons),
                        bound=SPREAD_FACTOR * services * INTERVAL_SECONDS / max_age + changed,
                        updated=result.report.updated,
                        wall=time.perf_counter() - started,
                    )
                )
    finally:
        sandbox.fleet = original
    worst = max(runs, key=lambda r: r["asked"] / r["bound"])
    return SimulationFigures(
        services=services,
        hours=hours,
        interval_seconds=INTERVAL_SECONDS,
        max_age_seconds=max_age,
        change_share=CHANGE_SHARE,
        cold_asked=services,
        runs=runs,
        worst=worst,
        total_asked_after_cold=sum(r["asked"] for r in runs),
    )


async def resync_latency(
    sandbox: SandboxServer, database_url: str, conn: asyncpg.Connection, *, n: int
) -> ResyncFigures:
    """The daemon's cold start-up sync at 20 requests/s; a resync requested a few seconds in."""
    await reset(conn)
    settings = settings_for(
        sandbox.url,
        database_url,
        hostwinds={"requests_per_second": RESYNC_REQUESTS_PER_SECOND},
        sync={"max_run_seconds": RESYNC_MAX_RUN_SECONDS, "shutdown_grace_seconds": 0},
        admin={"listen": "127.0.0.1:0", "token": _TOKEN},
    )
    # The instance a cold run asks last (services are asked in serviceid order): not yet priced.
    last = n - 1
    target = hostwinds_id(last, sandbox.fleet.instances[last])
    async with open_resources(settings) as (client, pool):
        # No scheduled run during the measurement: only the start-up sync, its catch-ups, the resync.
        daemon = Daemon(settings, client, pool, trigger=IntervalTrigger(days=365))
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(daemon.serve(stop, initial_sync=True))
        try:
            while daemon.admin_url is None:
                if task.done():
                    await task
                    raise RuntimeError("the daemon stopped before its admin endpoint listened")
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=daemon.admin_url, timeout=30) as http:
                await asyncio.sleep(max(0.0, RESYNC_AFTER_SECONDS - (time.perf_counter() - started)))
                current = daemon.runner.current
                asked, to_ask = (current.progress.asked, current.progress.to_ask) if current else (0, 0)
                requested = time.perf_counter()
                answer = await http.post(
                    "/resync", json={"instances": [target]}, headers={"Authorization": f"Bearer {_TOKEN}"}
                )
                answer.raise_for_status()
                run_id = uuid.UUID(answer.json()["run_id"])
                record = daemon.runner.get(run_id)
                assert record is not None
                await asyncio.wait_for(record.done.wait(), RESYNC_WAIT_SECONDS)
                latency = time.perf_counter() - requested
                fleet_runs = sum(
                    1
                    for r in daemon.runner.runs.values()
                    if r.instances is None and r.state in (RunState.SUCCEEDED, RunState.FAILED)
                )
        finally:
            stop.set()
            await task
    priced = await conn.fetchval(
        "SELECT approximate_cost IS NOT NULL FROM vps_instances WHERE hostwinds_instance_id = $1", target
    )
    return ResyncFigures(
        services=n,
        requests_per_second=RESYNC_REQUESTS_PER_SECOND,
        max_run_seconds=RESYNC_MAX_RUN_SECONDS,
        requested_after_seconds=requested - started,
        cold_asked_at_request=asked,
        cold_to_ask=to_ask,
        latency_seconds=latency,
        run_seconds=record.report.duration_seconds if record.report else None,
        state=record.state.value,
        target_priced=bool(priced),
        fleet_runs_before=fleet_runs,
    )


async def measure(*, n: int, database_url: str, hours: int) -> CacheFigures:
    """The three figures of one fleet size (see the module docstring)."""
    conn = await asyncpg.connect(database_url)
    try:
        # cost-sync's own connections: through PgBouncer with `bench/run.py --pgbouncer`.
        run_url = os.environ.get(RUN_DATABASE_URL_ENV) or database_url
        async with SandboxServer(generate_fleet(n)) as sandbox:
            settings = settings_for(sandbox.url, run_url)
            print(f"N={n}: outage", file=sys.stderr, flush=True)
            outage_figures = await outage(sandbox, settings, conn)
            print(f"N={n}: simulation of {hours} hours", file=sys.stderr, flush=True)
            simulation = await simulate(sandbox, settings, conn, n=n, hours=hours)
            print(f"N={n}: resync during a cold sync", file=sys.stderr, flush=True)
            resync = await resync_latency(sandbox, run_url, conn, n=n)
    finally:
        await conn.close()
    return CacheFigures(n=n, outage=outage_figures, simulation=simulation, resync=resync)


def main() -> int:
    """Measure one fleet size's cache figures and write them as JSON to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--hours", type=int, default=HOURS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logs.configure(level="warning", json_logs=True)
    figures = asyncio.run(measure(n=args.n, database_url=os.environ[DATABASE_URL_ENV], hours=args.hours))
    args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
