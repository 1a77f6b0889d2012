"""Time faults on real PostgreSQL and the real sandbox: a clock that ran ahead, a budget too short.

The wall clock is moved through the clock cost-sync is given (``now``), never by sleeping; the
database keeps its own clock, as it would on another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest

from cost_sync.cli import main as cli
from cost_sync.daemon.service import Daemon
from cost_sync.hostwinds.sandbox import Faults, SandboxServer, load_demo_fleet
from cost_sync.run.sync import run_once
from cost_sync.settings import Settings
from cost_sync.store.postgres import Store
from cost_sync.wiring import open_hostwinds
from tests.integration.conftest import seed, values
from tests.integration.test_reliability import DEMO_ROWS, cli_env

pytestmark = pytest.mark.db

YEAR = timedelta(days=365)


class Clocks:
    """A wall clock with an offset and a monotonic clock that tests move forward by hand."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.mono = 1000.0  # float-ok: seconds

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:  # float-ok: seconds
        return self.mono


def sandbox_settings(url: str, key: str, **sync: object) -> Settings:
    return Settings(
        hostwinds={"url": url, "api_key": key, "requests_per_second": 0},  # type: ignore[arg-type]
        admin={"listen": "127.0.0.1:0"},  # type: ignore[arg-type]
        sync=sync,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def daemon_on(
    pool: asyncpg.Pool, settings: Settings, clocks: Clocks
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """A daemon on the sandbox with these clocks, its admin endpoint, stopped on exit."""
    async with open_hostwinds(settings) as client:
        daemon = Daemon(settings, client, pool, now=clocks.now, monotonic=clocks.monotonic)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.serve(stop, initial_sync=False))
        for _ in range(200):
            if daemon.admin_url is not None:
                break
            await asyncio.sleep(0.02)
        assert daemon.admin_url is not None
        try:
            async with httpx.AsyncClient(base_url=daemon.admin_url, timeout=10) as admin:
                yield daemon, admin
        finally:
            stop.set()
            await task


async def fleet_run(daemon: Daemon, *, full: bool = False) -> str:
    """Queue a whole-fleet run, wait for it, return its state."""
    record = daemon.runner.request(None, "schedule", full=full)
    await asyncio.wait_for(record.done.wait(), timeout=30)
    return record.state.value


async def test_a_budget_spent_before_asking_fails_the_run_and_readiness(
    db_url: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """get_instances slower than sync.max_run_seconds: exit 1 saying so, nothing written, /readyz 503."""
    await seed(pool, DEMO_ROWS)
    before = await values(pool)
    fleet = load_demo_fleet()
    slow = Faults(latency_seconds=2.5, actions=frozenset({"get_instances"}))
    async with SandboxServer(fleet, faults=slow) as sandbox:
        cli_env(monkeypatch, db_url, sandbox.url, fleet.api_key, COST_SYNC_MAX_RUN_SECONDS="2")
        code = await asyncio.to_thread(cli.main, ["--once"])
        err = capsys.readouterr().err
        assert code == 1, err
        assert "cost-sync: error: no progress: the run's time budget (sync.max_run_seconds = 2 s)" in err
        assert "Raise sync.max_run_seconds" in err
        assert await values(pool) == before
        run = await pool.fetchrow("SELECT outcome, error FROM cost_sync_runs")
        assert run["outcome"] == "failed"
        assert run["error"].startswith("no progress:")

        # The daemon: ready after a run that made progress, not ready once a run stalls, ready
        # again after the next run that makes progress.
        sandbox.faults = Faults()
        budget = sandbox_settings(sandbox.url, fleet.api_key, max_run_seconds=2)
        async with daemon_on(pool, budget, Clocks()) as (daemon, admin):
            assert await fleet_run(daemon) == "succeeded"
            assert (await admin.get("/readyz")).status_code == 200
            sandbox.faults = slow
            # Forced, so there is something to ask: a run with every price cached needs no budget.
            assert await fleet_run(daemon, full=True) == "failed"
            ready = await admin.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["reason"].startswith("the last run could not make progress: no progress:")
            sandbox.faults = Faults()
            assert await fleet_run(daemon, full=True) == "succeeded"
            assert (await admin.get("/readyz")).status_code == 200


async def test_a_budget_that_reaches_some_services_is_progress_not_a_failure(pool: asyncpg.Pool) -> None:
    """Second way: each answer slow, the budget covers a few: the run succeeds with the rest pending."""
    await seed(pool, DEMO_ROWS)
    fleet = load_demo_fleet()
    slow = Faults(latency_seconds=0.6, actions=frozenset({"get_billingcycle_prices"}))
    async with SandboxServer(fleet, faults=slow) as sandbox:
        settings = sandbox_settings(sandbox.url, fleet.api_key, max_run_seconds=1)
        settings = settings.model_copy(
            update={"hostwinds": settings.hostwinds.model_copy(update={"max_concurrency": 1})}
        )
        async with open_hostwinds(settings) as client:
            result = await run_once(client=client, pool=pool, settings=settings)
    cache = result.report.price_cache
    assert result.report.outcome == "succeeded"
    assert cache.asked >= 1
    assert cache.pending >= 1


async def test_a_clock_that_ran_ahead_does_not_freeze_the_cache(
    db_url: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run a year ahead, then the clock corrected: the price change is asked; no negative age shown."""
    await seed(pool, [("1234567", "active", None), ("1234574", "active", None)])
    fleet = load_demo_fleet()
    clocks = Clocks()
    clocks.offset = YEAR
    async with SandboxServer(fleet) as sandbox:
        settings = sandbox_settings(sandbox.url, fleet.api_key)
        async with open_hostwinds(settings) as client:
            await run_once(client=client, pool=pool, settings=settings, now=clocks.now)
            assert (await values(pool))["1234574"] == Decimal("17.99")
            observed = await pool.fetchval(
                "SELECT observed FROM cost_sync_price_observations WHERE serviceid = 1234574"
            )
            assert observed > datetime.now(UTC) + YEAR - timedelta(days=1)

            # report, on the real clock: the observation is dated ahead; its age is never negative.
            cli_env(monkeypatch, db_url, sandbox.url, fleet.api_key)
            assert await asyncio.to_thread(cli.main, ["report", "--json"]) == 0
            report = json.loads(capsys.readouterr().out)
            assert report["oldest_observation_age_seconds"] == 0
            assert report["oldest_observation_in_future"] is True
            assert await asyncio.to_thread(cli.main, ["report"]) == 0
            assert "dated in the future" in capsys.readouterr().out

            # The clock is corrected and Hostwinds changes the price: the next run asks again.
            clocks.offset = timedelta(0)
            prices = dict(fleet.cycle_prices)
            prices[1234574] = {**prices[1234574], "monthly": "18.99"}
            sandbox.fleet = dataclasses.replace(fleet, cycle_prices=prices)
            result = await run_once(client=client, pool=pool, settings=settings, now=clocks.now)
    assert result.report.price_cache.reasons["stale"] >= 1
    assert (await values(pool))["1234574"] == Decimal("18.99")
    # The answer dated a year ahead was replaced by the new one, dated now.
    observed = await pool.fetchval(
        "SELECT observed FROM cost_sync_price_observations WHERE serviceid = 1234574"
    )
    assert observed <= datetime.now(UTC)


async def test_readiness_survives_a_clock_correction(pool: asyncpg.Pool) -> None:
    """A success recorded a year ahead, then every run fails: /readyz goes 503 once the gap passes."""
    await seed(pool, DEMO_ROWS)
    fleet = load_demo_fleet()
    clocks = Clocks()
    clocks.offset = YEAR
    async with SandboxServer(fleet) as sandbox:
        settings = sandbox_settings(sandbox.url, fleet.api_key)
        async with daemon_on(pool, settings, clocks) as (daemon, admin):
            assert await fleet_run(daemon) == "succeeded"
            finished = await pool.fetchval("SELECT max(finished) FROM cost_sync_runs")
            assert finished > datetime.now(UTC) + YEAR - timedelta(days=1)
            assert (await admin.get("/readyz")).status_code == 200

            clocks.offset = timedelta(0)
            sandbox.faults = Faults(auth_error=True)
            assert await fleet_run(daemon) == "failed"
            # Three hours pass (the default schedule is hourly: two gaps are tolerated), on this
            # process's monotonic clock and on the database's, which dated the ledger rows.
            clocks.mono += 3 * 3600
            await pool.execute(
                "UPDATE cost_sync_runs SET created = created - interval '3 hours',"
                " lease_taken = lease_taken - interval '3 hours'"
            )
            ready = await admin.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "more than twice the schedule interval" in ready.json()["reason"]


async def test_readiness_ignores_a_success_the_database_dated_in_the_future(pool: asyncpg.Pool) -> None:
    """Second way: the database's clock was ahead when it recorded the last success."""
    fleet = load_demo_fleet()
    async with SandboxServer(fleet) as sandbox:
        settings = sandbox_settings(sandbox.url, fleet.api_key)
        async with daemon_on(pool, settings, Clocks()) as (_, admin):
            await pool.execute(
                "INSERT INTO cost_sync_runs (id, trigger, outcome, started, finished, created)"
                " VALUES (gen_random_uuid(), 'schedule', 'succeeded', now() + interval '1 year',"
                " now() + interval '1 year', now() + interval '1 year')"
            )
            ready = await admin.get("/readyz")
    assert ready.status_code == 503
    assert "in the future" in ready.json()["reason"]


async def test_sigkill_loses_at_most_the_last_second_of_answers(db_url: str, pool: asyncpg.Pool) -> None:
    """A real `cost-sync --once` killed with SIGKILL while asking (one answer per 0.3 s): the answers
    it had received more than about a second before are in the cache (before: none under 200)."""
    await seed(pool, [(str(i["serviceid"]), "active", None) for i in load_demo_fleet().instances])
    fleet = load_demo_fleet()
    slow = Faults(latency_seconds=0.3, actions=frozenset({"get_billingcycle_prices"}))
    async with SandboxServer(fleet, faults=slow) as sandbox:
        env = {
            **os.environ,
            "COST_SYNC_DATABASE_URL": db_url,
            "COST_SYNC_HOSTWINDS_URL": sandbox.url,
            "COST_SYNC_HOSTWINDS_API_KEY": fleet.api_key,
            "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
            "COST_SYNC_HOSTWINDS_MAX_CONCURRENCY": "1",
        }
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("cost-sync")),
            "--once",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while sandbox.requests["get_billingcycle_prices"] < 8:
            assert loop.time() < deadline, "the run never asked"
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        asked = sandbox.requests["get_billingcycle_prices"]
    kept = await pool.fetchval("SELECT count(*) FROM cost_sync_price_observations")
    # At most the answers of the last second (about 3 at 0.3 s each) and the one in flight are lost.
    assert kept >= asked - 5, (kept, asked)
    assert kept >= 3


async def test_the_last_good_run_is_the_latest_in_the_ledger_not_the_latest_dated(pool: asyncpg.Pool) -> None:
    """A run made a year ahead, then one on the corrected clock: the guards compare with the second."""
    await seed(pool, DEMO_ROWS)
    fleet = load_demo_fleet()
    clocks = Clocks()
    async with SandboxServer(fleet) as sandbox:
        settings = sandbox_settings(sandbox.url, fleet.api_key)
        async with open_hostwinds(settings) as client:
            clocks.offset = YEAR
            ahead = await run_once(client=client, pool=pool, settings=settings, now=clocks.now)
            clocks.offset = timedelta(0)
            corrected = await run_once(client=client, pool=pool, settings=settings, now=clocks.now)
    last = await Store(pool).last_good_run()
    assert last is not None
    assert last.run_id == corrected.report.run_id != ahead.report.run_id
