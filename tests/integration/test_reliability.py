"""The fault matrix's regressions on real PostgreSQL: each fault injected the way it was found."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import respx
from structlog.testing import capture_logs

from cost_sync.cli import main as cli
from cost_sync.domain.models import Unpriced
from cost_sync.errors import DatabaseError
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import Faults, SandboxServer, load_demo_fleet
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once
from cost_sync.settings import Settings
from tests.integration.conftest import API_KEY, URL, FakeHostwinds, dump, instance, seed, values
from tests.integration.test_daemon import TOKEN, daemon_settings, mocked, start, wait_for

pytestmark = pytest.mark.db

__all__ = ["mocked"]  # a fixture, used by name below

DEMO_ROWS: list[tuple[str | None, str, str | None]] = [
    ("1234567", "active", None),
    ("1234568", "active", "10.50"),
    ("1234574", "active", "1.00"),
]


def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, url: str, key: str, **more: str) -> None:
    """Point `cost-sync` at this database and this Hostwinds (sandbox or respx)."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", key)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    for name, value in more.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("faults", "env", "cause"),
    [
        (Faults(auth_error=True), {}, "Hostwinds refused the API key"),
        (
            Faults(latency_seconds=3.0),
            {"COST_SYNC_HOSTWINDS_TIMEOUT_SECONDS": "0.3", "COST_SYNC_HOSTWINDS_ATTEMPTS": "1"},
            "get_billingcycle_prices: Hostwinds did not answer after 1 attempts",
        ),
    ],
    ids=["auth_error", "timeout"],
)
async def test_per_service_price_failure_is_a_clean_failed_run(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    faults: Faults,
    env: dict[str, str],
    cause: str,
) -> None:
    """Auth error or timeout on get_billingcycle_prices alone: exit 1, one error line, a failed ledger row."""
    conn = await asyncpg.connect(db_url)
    await seed(conn, DEMO_ROWS)
    before = await values(conn)
    fleet = load_demo_fleet()
    faults.actions = frozenset({"get_billingcycle_prices"})
    async with SandboxServer(fleet, faults=faults) as sandbox:
        cli_env(monkeypatch, db_url, sandbox.url, fleet.api_key, **env)
        code = await asyncio.to_thread(cli.main, ["--once"])
    err = capsys.readouterr().err
    assert code == 1
    # Said once: the command line's error line (the daemon logs sync.failed instead).
    assert [line for line in err.splitlines() if "cost-sync: error:" in line] == [
        next(line for line in err.splitlines() if line.startswith(f"cost-sync: error: {cause}"))
    ]
    assert "ExceptionGroup" not in err
    assert await values(conn) == before
    run = await conn.fetchrow("SELECT outcome, error FROM cost_sync_runs")
    await conn.close()
    assert run["outcome"] == "failed"
    assert run["error"].startswith(cause)


async def test_unstorable_instance_fields_do_not_fail_the_fleet(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """product_id 99999999999 and a NUL or lone surrogate in product_name: the run succeeds, every run."""
    hostwinds.instances = [
        instance(1),
        instance(2, product_id=99999999999),
        instance(3, product_name="bad\x00name"),
        instance(4, product_name="bad\ud800name"),
    ]
    hostwinds.cycle_prices = {2: {"monthly": "4.99"}, 3: {"monthly": "5.99"}, 4: {"monthly": "6.99"}}
    await seed(
        pool, [("1", "active", None), ("2", "active", None), ("3", "active", None), ("4", "active", None)]
    )
    with capture_logs() as logs:
        for _ in range(2):
            result = await run_once(
                client=client, pool=pool, settings=Settings(), request=RunRequest(full=True)
            )
            assert result.report.outcome == "succeeded"
    assert await values(pool) == {
        "1": Decimal("9.99"),
        "2": Decimal("4.99"),
        "3": Decimal("5.99"),
        "4": Decimal("6.99"),
    }
    dropped = {(e["serviceid"], tuple(e["fields"])) for e in logs if e["event"] == "hostwinds.field_dropped"}
    assert dropped == {(2, ("product_id",)), (3, ("product_name",)), (4, ("product_name",))}
    history = await pool.fetch(
        "SELECT hostwinds_instance_id, product_id, product_name FROM cost_sync_history"
    )
    assert {r["hostwinds_instance_id"]: (r["product_id"], r["product_name"]) for r in history} == {
        "1": (101, "plan 101"),
        "2": (None, "plan 99999999999"),
        "3": (101, "Unmanaged Linux 1 CPU / 2 GB"),
        "4": (101, "Unmanaged Linux 1 CPU / 2 GB"),
    }


async def test_duplicate_serviceid_fails_closed_for_that_service(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """A twin of service 7 on another plan: row 7 is unpriced (duplicate_instance), flagged, value kept."""
    hostwinds.instances = [instance(7, product_id=101), instance(8), instance(7, product_id=102), instance(8)]
    await seed(pool, [("7", "active", "4.99"), ("8", "active", None)])
    with capture_logs() as logs:
        result = await run_once(client=client, pool=pool, settings=Settings())
    assert await values(pool) == {"7": Decimal("4.99"), "8": Decimal("9.99")}
    assert result.report.unpriced_by_reason == {"duplicate_instance": 1}
    assert 7 not in hostwinds.asked  # neither twin's price is asked
    assert any("listed 1 service id(s) more than once" in w for w in result.report.warnings)
    assert any(e["event"] == "sync.flagged" and e["kind"] == "duplicate_instance" for e in logs)


async def test_server_uuid_on_two_services_fails_closed_for_rows_keyed_by_it(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """Services 7 and 8 carry one server_uuid: the row keyed by it keeps its value, flagged; 8 is priced."""
    shared = str(uuid.UUID(int=7))
    hostwinds.instances = [
        instance(7, product_id=101),
        instance(8, product_id=102, server_uuid=shared.upper()),
    ]
    await seed(pool, [(shared, "active", "4.99"), ("8", "active", None)])
    with capture_logs() as logs:
        result = await run_once(client=client, pool=pool, settings=Settings())
    assert await values(pool) == {shared: Decimal("4.99"), "8": Decimal("19.99")}
    assert result.report.unpriced_by_reason == {"duplicate_instance": 1}
    (unpriced,) = [o.result for o in result.outcomes if isinstance(o.result, Unpriced)]
    assert "services 7, 8" in unpriced.detail
    assert 7 not in hostwinds.asked  # no row is priced on service 7: its prices are not asked
    assert any(
        "1 server_uuid(s) on more than one service id (services 7, 8)" in w for w in result.report.warnings
    )
    assert any(e["event"] == "sync.flagged" and e["kind"] == "shared_server_uuid" for e in logs)
    assert not any(shared in str(e) for e in logs if e["event"] == "sync.flagged")


async def test_swings_shared_rows_and_unused_overrides_are_flagged(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """x10 swings, two rows naming one VPS and an override naming no row are flagged, not hidden."""
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [("1", "active", "0.99"), ("01", "active", "9.99"), ("2", "active", "9.99")])
    settings = Settings(overrides={" 424242 ": "5.00", "2": "9.99"})
    result = await run_once(client=client, pool=pool, settings=settings)
    report = result.report
    assert report.rows_sharing_instance == 2
    text = "\n".join(report.warnings)
    assert "2 rows name only 1 Hostwinds instance(s)" in text
    assert "1 override(s) name no row in scope ('424242')" in text
    assert "1 of 3 rows change to x10 or more" in text
    assert "0.99 -> 9.99" in text
    # The ledger keeps the same lines and the plan-name comparison (sql/0007).
    ledger = await pool.fetchrow(
        "SELECT warnings, plan_names FROM cost_sync_runs WHERE id = $1", report.run_id
    )
    assert ledger["warnings"] == report.warnings
    assert json.loads(ledger["plan_names"]) == report.plan_names == {"agree": 0, "disagree": 3}


async def test_empty_instance_list_and_missing_plans_are_flagged(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """An empty instance list with rows in scope, and a price list missing most plans, are flagged."""
    await seed(pool, [("1", "active", "9.99"), ("2", "active", "9.99"), ("3", "active", "9.99")])
    report = (await run_once(client=client, pool=pool, settings=Settings())).report
    assert any("listed no instances while 3 rows are in scope" in w for w in report.warnings)
    hostwinds.instances = [instance(1), instance(2, product_id=555), instance(3, product_id=556)]
    report = (await run_once(client=client, pool=pool, settings=Settings())).report
    assert any("lacks the plan of 2 of 3 matched rows" in w for w in report.warnings)


async def test_write_waits_for_a_row_lock_only_as_long_as_lock_timeout(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool, db_url: str
) -> None:
    """A row locked by another transaction fails the run after lock_timeout_seconds with a clear message."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    holder = await asyncpg.connect(db_url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM vps_instances WHERE hostwinds_instance_id = '1' FOR UPDATE")
        settings = Settings(database={"lock_timeout_seconds": 0.5})  # type: ignore[arg-type]
        with pytest.raises(DatabaseError, match="locked by another transaction and gave up"):
            await asyncio.wait_for(run_once(client=client, pool=pool, settings=settings), timeout=20)
        await tx.rollback()
    finally:
        await holder.close()
    assert await values(pool) == {"1": None}
    run = await pool.fetchrow("SELECT outcome, error FROM cost_sync_runs")
    assert run["outcome"] == "failed"
    assert "database.lock_timeout_seconds" in run["error"]


async def test_idle_connections_terminated_during_hostwinds_phase_cost_nothing(
    hostwinds: FakeHostwinds, pool: asyncpg.Pool, db_url: str
) -> None:
    """pg_terminate_backend of every pooled connection while the run asks Hostwinds.

    The run holds no connection then (its lease is a row, not a session): the pool opens new ones
    and the run writes its prices under the lease it still holds.
    """
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    admin = await asyncpg.connect(db_url)

    async def kill_then_answer(request: httpx.Request) -> httpx.Response:
        if b"get_price_list" in request.content:
            pids = await admin.fetchval(
                "SELECT array_agg(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)

            # Until the backends are gone, and the pool has read their goodbyes.
            async def gone() -> bool:
                alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)"
                return not await admin.fetchval(alive, pids)

            await wait_for(gone)
            await asyncio.sleep(0.2)
        return hostwinds(request)

    try:
        with respx.mock(assert_all_mocked=True) as mock:
            mock.post(URL).mock(side_effect=kill_then_answer)
            async with httpx.AsyncClient() as http:
                client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
                result = await run_once(client=client, pool=pool, settings=Settings())
        assert len(result.changes) == 1
        assert (await values(admin))["1"] is not None
        assert await admin.fetchval("SELECT outcome FROM cost_sync_runs") == "succeeded"
    finally:
        await admin.close()


async def test_backend_terminated_during_the_write_fails_clearly(
    hostwinds: FakeHostwinds, pool: asyncpg.Pool, db_url: str
) -> None:
    """pg_terminate_backend of the connection the final write runs on: a failed run, rows unchanged."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    admin = await asyncpg.connect(db_url)
    blocker = await asyncpg.connect(db_url)
    try:
        # The write waits on this row lock, so its connection is in use when it is terminated.
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("SELECT 1 FROM vps_instances WHERE hostwinds_instance_id = '1' FOR UPDATE")

        async def writer_waits() -> bool:
            waiting.extend(
                await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND pid NOT IN (pg_backend_pid(), $1)",
                    blocker.get_server_pid(),
                )
            )
            return bool(waiting)

        async def kill_the_waiting_writer() -> None:
            await wait_for(writer_waits, timeout=20)
            await admin.execute("SELECT pg_terminate_backend($1)", waiting[0]["pid"])

        waiting: list[asyncpg.Record] = []

        killer = asyncio.create_task(kill_the_waiting_writer())
        with respx.mock(assert_all_mocked=True) as mock:
            mock.post(URL).mock(side_effect=hostwinds)
            async with httpx.AsyncClient() as http:
                client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
                with pytest.raises(DatabaseError) as caught:
                    await asyncio.wait_for(run_once(client=client, pool=pool, settings=Settings()), 30)
        await asyncio.wait_for(killer, 5)
        await lock.rollback()
        assert "released back to the pool" not in str(caught.value)
        assert "lost" in str(caught.value)
        assert await values(admin) == {"1": None}
        assert await admin.fetchval("SELECT outcome FROM cost_sync_runs") == "failed"
    finally:
        await blocker.close()
        await admin.close()


async def test_resync_refuses_ids_postgresql_cannot_store(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """POST /resync with a NUL, a lone surrogate or a 10k-character id is a 400; nothing is queued."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with start(pool, daemon_settings(token=TOKEN)) as d:
        for bad in ('"1\\u0000"', '"\\ud800"', json.dumps("9" * 10_000)):
            body = f'{{"instances": ["1", {bad}]}}'.encode()
            answer = await d.http.post("/resync", content=body, headers=auth)
            assert answer.status_code == 400, answer.text
        huge = json.dumps({"instances": ["x" * 200] * 1000 + ["y" * 200] * 2000}).encode()
        assert (await d.http.post("/resync", content=huge, headers=auth)).status_code == 413
        junk = b"\xff" * 10_000_000
        assert (await d.http.post("/resync", content=junk)).status_code == 401  # before reading it
        for body in (b"[]", b"{", json.dumps({"instances": ["1"] * 1001}).encode(), b"[" * 100_000):
            assert (await d.http.post("/resync", content=body, headers=auth)).status_code == 400
        assert (await d.http.put("/resync", content=b"{}", headers=auth)).status_code == 405
        assert (await d.http.get("/runs/..%2F..%2Fetc%2Fpasswd")).status_code == 404
        assert not d.daemon.runner.runs
        ok = await d.http.post("/resync", json={"instances": ["1"]}, headers=auth)
        assert ok.status_code == 202
        run_id = ok.json()["run_id"]

        async def finished() -> bool:
            return (await d.http.get(f"/runs/{run_id}")).json()["state"] == "succeeded"

        await wait_for(finished)
    assert await pool.fetchval("SELECT count(*) FROM cost_sync_runs WHERE outcome = 'failed'") == 0


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [
        (signal.SIGTERM, 143, "cost-sync: error: Terminated by SIGTERM"),
        (signal.SIGINT, 130, "cost-sync: error: interrupted"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
async def test_signal_to_once_exits_with_a_cancelled_ledger_row(
    db_url: str, sig: signal.Signals, code: int, said: str
) -> None:
    """SIGTERM (143) or SIGINT (130) to a real `cost-sync --once` mid-run: "cancelled" ledger row."""
    conn = await asyncpg.connect(db_url)
    await seed(conn, DEMO_ROWS)
    before = (await dump(conn))[0]
    fleet = load_demo_fleet()
    async with SandboxServer(fleet, faults=Faults(latency_seconds=5.0)) as sandbox:
        env = {
            **os.environ,
            "COST_SYNC_DATABASE_URL": db_url,
            "COST_SYNC_HOSTWINDS_URL": sandbox.url,
            "COST_SYNC_HOSTWINDS_API_KEY": fleet.api_key,
            "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
        }
        command = [str(Path(sys.executable).with_name("cost-sync")), "--once"]
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while sandbox.requests["get_instances"] < 1:
                assert loop.time() < deadline, "the run never asked Hostwinds"
                await asyncio.sleep(0.05)
            proc.send_signal(sig)
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == code, stderr.decode()[-2000:]
    assert said in stderr.decode()
    assert (await dump(conn))[0] == before
    run = await conn.fetchrow("SELECT trigger, outcome, error FROM cost_sync_runs")
    await conn.close()
    assert (run["trigger"], run["outcome"]) == ("once", "failed")
    assert "cancelled" in run["error"]
