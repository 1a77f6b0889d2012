"""Deployed as ops deploy it: behind a real PgBouncer in transaction mode, and as replicas.

Real processes throughout: `cost-sync` commands and daemons as subprocesses, the sandbox as
Hostwinds on 127.0.0.1, PostgreSQL directly or through PgBouncer (Debian's package). The ledger
is the proof: every run holds the lease alone (its [lease_taken, finished] interval overlaps no
other's), a scheduled fire is served once for the fleet, a killed replica's run ends 'abandoned'.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from apscheduler.triggers.cron import CronTrigger

from cost_sync.daemon.service import Daemon
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import Faults, SandboxServer, load_demo_fleet
from cost_sync.run.request import RunRequest
from cost_sync.settings import Settings
from cost_sync.store.db import create_pool
from cost_sync.store.migrate import discover
from cost_sync.store.sqlfiles import sql_dir
from tests.integration.conftest import API_KEY, URL, FakeHostwinds, hold_lease, instance, seed
from tests.pgbouncer import PgBouncer, free_port, run_pgbouncer

pytestmark = pytest.mark.db

TOKEN = "replica-admin-token"
#: A short lease keeps takeover fast in tests (the default is 30 s).
LEASE = 2.0
DEMO_ROWS: list[tuple[str | None, str, str | None]] = [
    ("1234567", "active", None),
    ("1234568", "active", "10.50"),
    ("1234574", "active", "1.00"),
]
COST_SYNC = str(Path(sys.executable).with_name("cost-sync"))


@pytest.fixture(scope="module")
def bouncer(pg_server: str) -> Iterator[PgBouncer]:
    """One PgBouncer (transaction mode, 2 server connections per database) for this module."""
    with run_pgbouncer(pg_server) as running:
        yield running


def base_env(database_url: str, sandbox: SandboxServer, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COST_SYNC_")}
    env.update(
        {
            "COST_SYNC_DATABASE_URL": database_url,
            "COST_SYNC_HOSTWINDS_URL": sandbox.url,
            "COST_SYNC_HOSTWINDS_API_KEY": sandbox.fleet.api_key,
            "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
            "COST_SYNC_LOG_FORMAT": "json",
            **more,
        }
    )
    return env


async def cost_sync(env: dict[str, str], *args: str, timeout: float = 90) -> tuple[int, str, str]:
    """Run `cost-sync ARGS` to its end; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        COST_SYNC, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def seed_platform(url: str) -> None:
    """The demo rows, and the platform's tenant tables attribution reads."""
    conn = await asyncpg.connect(url)
    try:
        await seed(conn, DEMO_ROWS)
        await conn.execute((sql_dir() / "fixtures" / "tenants.sql").read_text())
    finally:
        await conn.close()


async def ledger(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(
            "SELECT id, trigger, outcome, instances, lease_taken, finished, holder, error"
            " FROM cost_sync_runs ORDER BY lease_taken NULLS LAST, created"
        )
    finally:
        await conn.close()


def assert_no_overlap(runs: Sequence[asyncpg.Record]) -> None:
    """Each run that held the lease held it alone: its interval ends before the next one's starts."""
    held = sorted((r for r in runs if r["lease_taken"] is not None), key=lambda r: r["lease_taken"])
    for before, after in itertools.pairwise(held):
        assert before["finished"] is not None, dict(before)
        assert before["finished"] <= after["lease_taken"], (dict(before), dict(after))


# -- every verb through PgBouncer --------------------------------------------------------------


async def test_every_verb_works_through_pgbouncer(db_url: str, bouncer: PgBouncer) -> None:
    """Through PgBouncer in transaction mode (clients sharing two server connections), every verb
    succeeds, again and again after earlier clients: no prepared statement outlives its transaction,
    no session lock or setting is left on a server connection."""
    await seed_platform(db_url)
    async with SandboxServer(load_demo_fleet()) as sandbox:
        env = base_env(bouncer.url(db_url), sandbox)
        steps: list[tuple[str, ...]] = [
            ("migrate",),
            ("migrate", "--check"),
            ("--once",),
            ("--once",),
            ("--once", "--dry-run"),
            ("--once", "--instance", "1234567", "--full"),
            ("resync", "--instance", "1234568"),
            ("doctor",),
            ("explain", "1234567"),
            ("held",),
            ("approve", "--all"),
            ("report",),
            ("quote", "--instance", "1234567", "--plan", "102"),
            ("attribution",),
            ("attribution", "--write"),
            ("migrate", "--rollback", discover()[-1].version, "--yes"),
            ("migrate",),
            ("--once",),
        ]
        for args in steps:
            code, out, err = await cost_sync(env, *args)
            assert code == 0, f"{' '.join(args)} exited {code}:\n{out[-2000:]}\n{err[-3000:]}"
            assert "prepared statement" not in err, err[-2000:]
    runs = await ledger(db_url)
    assert [r["outcome"] for r in runs if r["trigger"] != "approve"] == ["succeeded"] * len(
        [r for r in runs if r["trigger"] != "approve"]
    )
    assert_no_overlap(runs)
    conn = await asyncpg.connect(db_url)
    try:
        # Nothing of the runs outlived them: the lease is free, no advisory lock is held anywhere.
        assert await conn.fetchval("SELECT expires_at < now() FROM cost_sync_lease")
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
        assert await conn.fetchval("SELECT count(*) FROM vps_instances WHERE approximate_cost IS NULL") == 0
    finally:
        await conn.close()


async def test_racing_runs_through_pgbouncer_never_overlap(db_url: str, bouncer: PgBouncer) -> None:
    """Three `--once` started together through PgBouncer: all succeed, one at a time (the ledger's
    [lease_taken, finished] intervals do not overlap), each waiting for the lease in turn."""
    await seed_platform(db_url)
    async with SandboxServer(load_demo_fleet(), faults=Faults(latency_seconds=0.2)) as sandbox:
        env = base_env(bouncer.url(db_url), sandbox, COST_SYNC_DATABASE_LEASE_SECONDS=str(LEASE))
        results = await asyncio.gather(*(cost_sync(env, "--once", "--full") for _ in range(3)))
    for code, _out, err in results:
        assert code == 0, err[-3000:]
    runs = await ledger(db_url)
    assert [r["outcome"] for r in runs] == ["succeeded"] * 3
    assert all(r["lease_taken"] is not None for r in runs)
    assert len({r["holder"] for r in runs}) == 3
    assert_no_overlap(runs)


# -- replicas ----------------------------------------------------------------------------------


@dataclass
class Replica:
    """One `cost-sync run` daemon as a subprocess, with its admin endpoint."""

    proc: asyncio.subprocess.Process
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def post_resync(self, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            return await http.post("/resync", json=body, headers={"Authorization": f"Bearer {TOKEN}"})

    async def run_state(self, run_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            answer = await http.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"})
        state: dict[str, Any] = answer.json()
        return state


@contextlib.asynccontextmanager
async def replicas(count: int, env: dict[str, str], folder: Path) -> AsyncIterator[list[Replica]]:
    """``count`` daemons on one database, each with its admin endpoint up."""
    started: list[Replica] = []
    try:
        for i in range(count):
            port = free_port()
            log = folder / f"replica-{i}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    COST_SYNC,
                    "run",
                    "--no-initial-sync",
                    env={**env, "COST_SYNC_ADMIN_LISTEN": f"127.0.0.1:{port}"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.append(Replica(proc, f"http://127.0.0.1:{port}", log))
        deadline = time.monotonic() + 30
        for replica in started:
            while True:
                assert replica.proc.returncode is None, replica.log.read_text()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    async with httpx.AsyncClient(base_url=replica.url, timeout=2) as http:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                assert time.monotonic() < deadline, replica.log.read_text()[-3000:]
                await asyncio.sleep(0.1)
        yield started
    finally:
        for replica in started:
            if replica.proc.returncode is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                await asyncio.wait_for(replica.proc.wait(), timeout=20)
            except TimeoutError:
                replica.proc.kill()
                await replica.proc.wait()


async def until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("count", "through"),
    [(2, "direct"), (2, "pgbouncer"), (3, "direct"), (3, "pgbouncer")],
    ids=["2-direct", "2-pgbouncer", "3-direct", "3-pgbouncer"],
)
async def test_replicas_resync_to_the_idle_one_and_sigkill_of_the_busy_one(
    db_url: str, pg_server: str, count: int, through: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """N daemons on one database. A resync to replica 0 makes it busy; a resync to the idle replica 1
    is queued in the ledger ('running', no lease yet) and waits for the lease. Replica 0 is SIGKILLed
    mid-run: within the lease (2 s here) plus a poll, replica 1 takes the lease over, the killed
    run's row ends 'abandoned' (set by the taker), and the resync to replica 1 succeeds. The ledger
    shows no two runs holding the lease at once; no run is left 'running'."""
    await seed_platform(db_url)
    url = db_url
    if through == "pgbouncer":
        url = request.getfixturevalue("bouncer").url(db_url)
    # Slow answers: the busy replica's run lasts long enough to be killed in the middle.
    async with SandboxServer(load_demo_fleet(), faults=Faults(latency_seconds=0.4)) as sandbox:
        env = base_env(
            url,
            sandbox,
            COST_SYNC_ADMIN_TOKEN=TOKEN,
            COST_SYNC_DATABASE_LEASE_SECONDS=str(LEASE),
            COST_SYNC_HOSTWINDS_MAX_CONCURRENCY="1",
        )
        conn = await asyncpg.connect(db_url)
        try:
            async with replicas(count, env, tmp_path) as fleet:
                busy, idle = fleet[0], fleet[1]
                answer = await busy.post_resync({"full": True})
                assert answer.status_code == 202, answer.text
                busy_run = answer.json()["run_id"]
                # The busy replica holds the lease and is asking Hostwinds.
                await until(
                    lambda: conn.fetchval(
                        "SELECT lease_taken IS NOT NULL FROM cost_sync_runs WHERE id = $1::uuid", busy_run
                    ),
                    20,
                    "the busy replica's run to take the lease",
                )
                await until(lambda: _true(sandbox.requests["get_billingcycle_prices"] >= 1), 20, "asking")
                answer = await idle.post_resync({"instances": ["1234567"]})
                assert answer.status_code == 202, answer.text
                idle_run = answer.json()["run_id"]
                # In the ledger from the moment it starts, waiting for the lease.
                waiting = await until(
                    lambda: conn.fetchrow(
                        "SELECT outcome, lease_taken FROM cost_sync_runs WHERE id = $1::uuid", idle_run
                    ),
                    10,
                    "the idle replica's run in the ledger",
                )
                assert (waiting["outcome"], waiting["lease_taken"]) == ("running", None)
                busy.proc.send_signal(signal.SIGKILL)
                killed_at = await conn.fetchval("SELECT now()")
                await busy.proc.wait()
                taken = await until(
                    lambda: conn.fetchval(
                        "SELECT lease_taken FROM cost_sync_runs WHERE id = $1::uuid", idle_run
                    ),
                    LEASE + 10,
                    "the idle replica to take the lease over",
                )
                takeover = (taken - killed_at).total_seconds()
                assert takeover < LEASE + 3, takeover
                state = await until(
                    lambda: _done(idle.run_state(idle_run)), 60, "the resync on the idle replica to end"
                )
                assert state["state"] == "succeeded", state
                # The other replicas stay up and idle.
                assert all(r.proc.returncode is None for r in fleet[1:])
                await asyncio.sleep(LEASE)
            runs = await ledger(db_url)
        finally:
            await conn.close()
    by_id = {str(r["id"]): r for r in runs}
    assert by_id[busy_run]["outcome"] == "abandoned"
    assert "took the lease over" in by_id[busy_run]["error"]
    assert by_id[idle_run]["outcome"] == "succeeded"
    assert not [r for r in runs if r["outcome"] == "running"]
    assert_no_overlap(runs)
    print(f"takeover after SIGKILL ({count} replicas, {through}, lease {LEASE:g} s): {takeover:.2f} s")


async def _true(value: bool) -> bool:
    return value


async def _done(state: Any) -> dict[str, Any] | None:
    current: dict[str, Any] = await state
    return current if current["state"] in {"succeeded", "failed", "skipped"} else None


async def test_an_idle_replica_takes_over_a_killed_run_without_being_asked(
    db_url: str, tmp_path: Path
) -> None:
    """With nothing queued on the survivor, its lease watch finds the killed run's expired lease and
    takes over with a whole-fleet run: the killed run ends 'abandoned', the fleet is priced."""
    await seed_platform(db_url)
    async with SandboxServer(load_demo_fleet(), faults=Faults(latency_seconds=0.4)) as sandbox:
        env = base_env(
            db_url,
            sandbox,
            COST_SYNC_ADMIN_TOKEN=TOKEN,
            COST_SYNC_DATABASE_LEASE_SECONDS=str(LEASE),
            COST_SYNC_HOSTWINDS_MAX_CONCURRENCY="1",
        )
        conn = await asyncpg.connect(db_url)
        try:
            async with replicas(2, env, tmp_path) as fleet:
                answer = await fleet[0].post_resync({"full": True})
                busy_run = answer.json()["run_id"]
                await until(lambda: _true(sandbox.requests["get_billingcycle_prices"] >= 1), 20, "asking")
                fleet[0].proc.send_signal(signal.SIGKILL)
                killed_at = await conn.fetchval("SELECT now()")
                await fleet[0].proc.wait()
                row = await until(
                    lambda: conn.fetchrow(
                        "SELECT id, lease_taken FROM cost_sync_runs WHERE trigger = 'takeover'"
                        " AND outcome = 'succeeded'"
                    ),
                    LEASE + 30,
                    "a takeover run",
                )
                takeover = (row["lease_taken"] - killed_at).total_seconds()
                # Expiry (at most the lease) plus the watch's period (a third of it) plus a poll.
                assert takeover < LEASE * 4 / 3 + 2, takeover
            runs = await ledger(db_url)
        finally:
            await conn.close()
    by_id = {str(r["id"]): r for r in runs}
    assert by_id[busy_run]["outcome"] == "abandoned"
    assert [r["trigger"] for r in runs if r["trigger"] == "takeover"] == ["takeover"]
    assert_no_overlap(runs)


# -- a scheduled fire is served once for the fleet -----------------------------------------------


async def test_a_scheduled_fire_is_served_once_for_two_replicas(db_url: str) -> None:
    """Two daemons (one process each in real life; here two in one loop, each with its own pool and
    client) on the same cron (every 2 s): each fire runs one sync for the fleet, not one per replica,
    so Hostwinds is asked get_instances once per fire whatever the number of replicas."""
    hostwinds = FakeHostwinds()
    hostwinds.instances = [instance(1), instance(2)]
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None), ("2", "active", None)])
    settings = Settings(admin={"listen": "127.0.0.1:0"}, database={"lease_seconds": LEASE})  # type: ignore[arg-type]

    async def no_sleep(_: float) -> None:
        return None

    stop = asyncio.Event()
    tasks: list[asyncio.Task[bool]] = []
    pools: list[asyncpg.Pool] = []
    started = datetime.now(UTC)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(URL).mock(side_effect=hostwinds)
        async with httpx.AsyncClient() as http:
            for _ in range(2):
                pool = await create_pool(db_url)
                pools.append(pool)
                client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None, sleep=no_sleep)
                daemon = Daemon(settings, client, pool, trigger=CronTrigger(second="*/2", timezone=UTC))
                tasks.append(asyncio.create_task(daemon.serve(stop, initial_sync=False)))
            await asyncio.sleep(7.5)
            stop.set()
            await asyncio.gather(*tasks)
    for pool in pools:
        await pool.close()
    ended = datetime.now(UTC)
    runs = await conn.fetch(
        "SELECT outcome, lease_taken, finished FROM cost_sync_runs WHERE trigger = 'schedule'"
        " ORDER BY lease_taken"
    )
    await conn.close()
    # Slots (even seconds) between start and stop, each served exactly once.
    slots = {
        r["lease_taken"].replace(microsecond=0) - timedelta(seconds=r["lease_taken"].second % 2) for r in runs
    }
    assert [r["outcome"] for r in runs] == ["succeeded"] * len(runs)
    assert len(slots) == len(runs), [r["lease_taken"] for r in runs]
    assert 3 <= len(runs) <= 4, (started, ended, runs)
    assert hostwinds.requests["get_instances"] == len(runs)
    assert_no_overlap(runs)


async def test_a_scheduled_fire_stays_served_when_its_replica_runs_late(db_url: str) -> None:
    """The skip is decided under the lease row's lock: a replica whose fire comes after another's
    run for the same slot ended records nothing and asks Hostwinds nothing."""
    from cost_sync.errors import RunServed
    from cost_sync.run.sync import run_once

    hostwinds = FakeHostwinds()
    hostwinds.instances = [instance(1)]
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None)])
    slot = await conn.fetchval("SELECT now()")
    with respx.mock(assert_all_called=False) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
            pool = await create_pool(db_url)
            try:
                await run_once(
                    client=client,
                    pool=pool,
                    settings=Settings(),
                    request=RunRequest(trigger="schedule", served_since=slot),
                )
                with pytest.raises(RunServed):
                    await run_once(
                        client=client,
                        pool=pool,
                        settings=Settings(),
                        request=RunRequest(trigger="schedule", served_since=slot),
                    )
            finally:
                await pool.close()
    assert hostwinds.requests["get_instances"] == 1
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_runs") == 1
    await conn.close()


async def test_a_run_that_lost_its_lease_writes_nothing(db_url: str) -> None:
    """Fencing: another process takes the lease while a run asks Hostwinds (as after a pause longer
    than the lease): the run's write is refused under the lease row's lock, vps_instances keeps its
    values, and the run's ledger row ends 'failed' saying so."""
    from cost_sync.errors import LeaseLost
    from cost_sync.run.sync import run_once

    hostwinds = FakeHostwinds()
    hostwinds.instances = [instance(1)]
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", "1.00")])
    asked = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        asked.set()
        await asyncio.sleep(0.5)
        return hostwinds(request)

    with respx.mock(assert_all_called=False) as mock:
        mock.post(URL).mock(side_effect=slow)
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
            pool = await create_pool(db_url)
            try:
                running = asyncio.create_task(run_once(client=client, pool=pool, settings=Settings()))
                await asyncio.wait_for(asked.wait(), 10)
                await hold_lease(conn)
                with pytest.raises(LeaseLost, match="the run lost its lease"):
                    await running
            finally:
                await pool.close()
    assert await conn.fetchval("SELECT approximate_cost::text FROM vps_instances") == "1.00"
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_history") == 0
    run = await conn.fetchrow("SELECT outcome, error, lease_taken FROM cost_sync_runs")
    await conn.close()
    assert run["outcome"] == "failed"
    assert "the run lost its lease" in run["error"]
    assert run["lease_taken"] is not None


async def test_taking_an_expired_lease_marks_the_holder_abandoned(db_url: str) -> None:
    """A run still 'running' whose lease expired (its process was killed) ends 'abandoned', set by
    the run that takes the lease over; that run succeeds."""
    from cost_sync.run.sync import run_once

    hostwinds = FakeHostwinds()
    hostwinds.instances = [instance(1)]
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None)])
    dead = uuid.uuid4()
    await conn.execute(
        "INSERT INTO cost_sync_runs (id, trigger, outcome, started, lease_taken, holder)"
        " VALUES ($1, 'schedule', 'running', now(), now(), 'gone:1')",
        dead,
    )
    await conn.execute(
        "UPDATE cost_sync_lease SET holder_run = $1, holder = 'gone:1', token = token + 1,"
        " taken_at = now(), expires_at = now() - interval '1 second'",
        dead,
    )
    with respx.mock(assert_all_called=False) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
            pool = await create_pool(db_url)
            try:
                result = await run_once(client=client, pool=pool, settings=Settings())
            finally:
                await pool.close()
    runs = {r["id"]: r for r in await conn.fetch("SELECT id, outcome, error FROM cost_sync_runs")}
    await conn.close()
    assert runs[dead]["outcome"] == "abandoned"
    assert f"run {result.report.run_id} took the lease over" in runs[dead]["error"]
    assert runs[result.report.run_id]["outcome"] == "succeeded"
