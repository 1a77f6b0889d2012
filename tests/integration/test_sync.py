"""One sync run end to end: real PostgreSQL, Hostwinds through respx, the pricing contract held."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import asyncpg
import httpx
import pytest
from structlog.testing import capture_logs

from cost_sync.cli import main as cli
from cost_sync.errors import (
    ConfigError,
    DatabaseError,
    HostwindsAuthError,
    HostwindsTransientError,
    LockTimeout,
)
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once
from cost_sync.settings import Settings
from tests.integration.conftest import (
    API_KEY,
    URL,
    FakeHostwinds,
    dump,
    hold_lease,
    instance,
    seed,
    settings,
    values,
)

pytestmark = pytest.mark.db

UUID_7 = "00000000-0000-0000-0000-000000000007"


def fleet(hostwinds: FakeHostwinds) -> None:
    """A small fleet: every cycle, both id forms, hourly, per-service prices, bad data."""
    hostwinds.instances = [
        instance(1, cycle="Monthly"),
        instance(2, cycle="Quarterly"),
        instance(3, cycle="Semi-Annually"),
        instance(4, cycle="Annually"),
        instance(5, cycle="Biennially"),
        instance(6, cycle="Triennially"),
        instance(7, cycle="Annually"),  # matched by its server_uuid
        instance(8, cycle="Monthly", hourly=1),
        instance(9, cycle="Bi-Annually"),
        instance(10, cycle="Quarterly", product_id=102),
        instance(11, cycle="Monthly", product_id=102),
        instance(12, cycle="Monthly", product_id=103),
        instance(13, cycle="Monthly"),
    ]
    hostwinds.cycle_prices = {13: {"monthly": {"price": "7.49", "duedate": "2026-12-01"}}}


ROWS: list[tuple[str | None, str, str | None]] = [
    ("1", "active", None),
    ("2", "active", "8.00"),  # within max_change_ratio of 9.99: applied
    ("3", "provisioning", None),
    ("4", "active", None),
    ("5", "scheduled_decommission", None),
    ("6", "active", None),
    (UUID_7.upper(), "active", None),
    ("8", "active", None),
    ("9", "active", "3.33"),
    ("10", "active", "4.44"),
    ("11", "active", None),
    ("12", "active", "5.55"),
    ("13", "active", None),
    ("999", "active", "6.66"),  # unknown at Hostwinds
    ("1000", "decommissioned", "7.77"),
]

EXPECTED = {
    "1": Decimal("9.99"),
    "2": Decimal("9.99"),
    "3": Decimal("9.49"),
    "4": Decimal("9.92"),
    "5": Decimal("8.49"),
    "6": Decimal("9.99"),
    UUID_7.upper(): Decimal("9.92"),
    "8": Decimal("9.99"),
    "9": Decimal("3.33"),  # unknown_cycle: kept
    "10": Decimal("4.44"),  # cycle_not_offered: kept
    "11": Decimal("19.99"),  # a JSON number, read exactly
    "12": Decimal("5.55"),  # out_of_range: kept, no constraint violation
    "13": Decimal("7.49"),  # the per-service price wins over the plan's 9.99
    "999": Decimal("6.66"),  # not_found: kept
    "1000": Decimal("7.77"),  # decommissioned: out of scope
}


async def test_prices_mixed_fleet_and_records_history(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """Every cycle and both id forms are priced exactly; unpriced rows keep their value, with reasons."""
    fleet(hostwinds)
    await seed(pool, ROWS)
    result = await run_once(client=client, pool=pool, settings=settings())
    assert await values(pool) == EXPECTED
    report = result.report
    assert report.rows_in_scope == 14
    assert report.matched == 13
    assert report.unpriced_by_reason == {
        "cycle_not_offered": 1,
        "not_found": 1,
        "out_of_range": 1,
        "unknown_cycle": 1,
    }
    assert report.priced_by_source == {"cycle_prices": 1, "price_list": 9}
    assert report.updated == 10
    assert report.hostwinds_calls == {"get_billingcycle_prices": 13, "get_instances": 1, "get_price_list": 1}
    history = await pool.fetch("SELECT * FROM cost_sync_history WHERE hostwinds_instance_id = '4'")
    assert len(history) == 1
    assert (history[0]["old_cost"], history[0]["new_cost"], history[0]["source"]) == (
        None,
        Decimal("9.92"),
        "price_list",
    )
    assert (history[0]["cycle"], history[0]["cycle_price"], history[0]["months"]) == (
        "annually",
        Decimal("119.00"),
        12,
    )
    hourly = await pool.fetchrow("SELECT * FROM cost_sync_history WHERE hostwinds_instance_id = '8'")
    assert hourly["hourly_ceiling"] is True
    run = await pool.fetchrow("SELECT * FROM cost_sync_runs")
    assert (run["outcome"], run["updated"], run["unpriced"], run["rows_in_scope"]) == ("succeeded", 10, 4, 14)
    assert json.loads(run["hostwinds_calls"])["get_instances"] == 1


async def test_decommissioned_row_is_untouched(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """A decommissioned row keeps its value and its updated timestamp even when Hostwinds knows it."""
    hostwinds.instances = [instance(1000), instance(1)]
    await seed(pool, [("1000", "decommissioned", "7.77"), ("1", "active", None)])
    before = await pool.fetchrow(
        "SELECT approximate_cost, updated FROM vps_instances WHERE hostwinds_instance_id = '1000'"
    )
    await run_once(client=client, pool=pool, settings=settings())
    after = await pool.fetchrow(
        "SELECT approximate_cost, updated FROM vps_instances WHERE hostwinds_instance_id = '1000'"
    )
    assert tuple(after) == tuple(before)
    assert hostwinds.requests["get_billingcycle_prices"] == 1


async def test_second_identical_run_writes_nothing(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """Run twice on the same inputs: the second updates 0 rows and bumps no timestamp."""
    fleet(hostwinds)
    await seed(pool, ROWS)
    await run_once(client=client, pool=pool, settings=settings())
    stamps = await pool.fetch("SELECT id, approximate_cost, updated FROM vps_instances ORDER BY id")
    second = await run_once(client=client, pool=pool, settings=settings())
    assert second.report.updated == 0
    assert second.report.unchanged == 10
    assert await pool.fetch("SELECT id, approximate_cost, updated FROM vps_instances ORDER BY id") == stamps
    assert await pool.fetchval("SELECT count(*) FROM cost_sync_history") == 10


async def test_updated_bumped_only_on_changed_rows(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """A changed row gets a new `updated`; a row already right keeps its old one."""
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [("1", "active", "9.99"), ("2", "active", "8.00")])
    await run_once(client=client, pool=pool, settings=settings())
    rows = {
        r[0]: r[1].year for r in await pool.fetch("SELECT hostwinds_instance_id, updated FROM vps_instances")
    }
    assert rows["1"] == 2020
    assert rows["2"] > 2020


@pytest.mark.parametrize(
    "failure",
    [
        lambda: httpx.Response(503, text="busy"),
        lambda: httpx.Response(200, text="<html>maintenance</html>"),
        lambda: httpx.Response(
            200, json=[{"result": "error", "action": "Authorization", "message": "Not Authorized!"}]
        ),
    ],
    ids=["5xx", "html", "auth"],
)
async def test_hostwinds_failing_midway_writes_nothing(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool, failure: object
) -> None:
    """get_instances succeeds, pricing calls fail: no value or history changes, a failed run is recorded."""
    fleet(hostwinds)
    hostwinds.fail["get_price_list"] = failure  # type: ignore[assignment]
    await seed(pool, ROWS)
    before = await values(pool)
    with pytest.raises((HostwindsTransientError, HostwindsAuthError)):
        await run_once(client=client, pool=pool, settings=settings())
    assert hostwinds.requests["get_instances"] == 1
    assert await values(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM cost_sync_history") == 0
    run = await pool.fetchrow("SELECT outcome, error, updated FROM cost_sync_runs")
    assert (run["outcome"], run["updated"]) == ("failed", 0)
    assert "get_price_list" in run["error"] or "refused" in run["error"]
    assert API_KEY not in run["error"]


async def test_override_wins_over_hostwinds(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """A Finance override is stored even for an instance Hostwinds prices, and asks it nothing."""
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [("1", "active", None), ("2", "active", None), ("77", "active", None)])
    result = await run_once(
        client=client, pool=pool, settings=settings(**{"1": Decimal("12.50"), "77": Decimal("3.00")})
    )
    assert await values(pool) == {"1": Decimal("12.50"), "2": Decimal("9.99"), "77": Decimal("3.00")}
    assert result.report.priced_by_source == {"override": 2, "price_list": 1}
    assert hostwinds.requests["get_billingcycle_prices"] == 1


async def test_targeted_run_touches_only_named_rows(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """--instance by serviceid, server_uuid, hostwinds_instance_id or row id limits the run to those rows."""
    fleet(hostwinds)
    ids = await seed(pool, ROWS)
    result = await run_once(
        client=client,
        pool=pool,
        settings=settings(),
        request=RunRequest(targets=["2", str(ids["4"]), UUID_7, "00000000-0000-0000-0000-000000000001"]),
    )
    changed = {
        k
        for k, v in (await values(pool)).items()
        if v != dict((r[0], r[2] and Decimal(r[2])) for r in ROWS)[k]
    }
    assert changed == {"1", "2", "4", UUID_7.upper()}
    assert result.report.rows_in_scope == 4
    assert hostwinds.requests["get_billingcycle_prices"] == 4
    run = await pool.fetchrow("SELECT instances FROM cost_sync_runs")
    assert len(run["instances"]) == 4


@pytest.mark.parametrize("target", ["424242", "no-such-row", "1000"])
async def test_unknown_target_is_a_usage_error(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool, target: str
) -> None:
    """An --instance that names no row in scope fails before any write, naming the argument."""
    fleet(hostwinds)
    await seed(pool, ROWS)
    before = await dump(pool)
    with pytest.raises(ConfigError, match=target):
        await run_once(client=client, pool=pool, settings=settings(), request=RunRequest(targets=[target]))
    assert await dump(pool) == before


async def test_dry_run_changes_nothing(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """A dry run computes every change but leaves every table byte-for-byte as it was."""
    fleet(hostwinds)
    await seed(pool, ROWS)
    before = await dump(pool)
    result = await run_once(client=client, pool=pool, settings=settings(), request=RunRequest(dry_run=True))
    assert await dump(pool) == before
    assert len(result.changes) == 10
    assert result.report.total_after - result.report.total_before == sum(
        (o.result.monthly - (o.row.approximate_cost or 0) for o in result.changes),
        Decimal(0),  # type: ignore[union-attr]
    )


async def test_second_run_waits_then_reports_run_in_progress(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool, db_url: str
) -> None:
    """While another process holds the run lease, a run waits its timeout then fails without writing
    anything but its ledger row, which says why."""
    fleet(hostwinds)
    await seed(pool, ROWS)
    await hold_lease(pool)
    quick = Settings(database={"lock_timeout_seconds": 0.3})  # type: ignore[arg-type]
    with pytest.raises(LockTimeout, match="another run is in progress"):
        await run_once(client=client, pool=pool, settings=quick)
    assert hostwinds.requests["get_instances"] == 0
    ledger = await pool.fetch("SELECT outcome, error, lease_taken, finished FROM cost_sync_runs")
    assert len(ledger) == 1
    assert ledger[0]["outcome"] == "failed"
    assert "another run is in progress (waited 0.3 s" in ledger[0]["error"]
    assert ledger[0]["lease_taken"] is None
    assert ledger[0]["finished"] is not None


async def test_logs_summary_and_each_unpriced_row_once(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """One sync.finished line with the counts, one sync.unpriced per unpriced row, no secret anywhere."""
    fleet(hostwinds)
    await seed(pool, ROWS)
    with capture_logs() as logs:
        await run_once(client=client, pool=pool, settings=settings())
    finished = [e for e in logs if e["event"] == "sync.finished"]
    assert len(finished) == 1
    assert finished[0]["updated"] == 10
    unpriced = sorted(e["hostwinds_instance_id"] for e in logs if e["event"] == "sync.unpriced")
    assert unpriced == ["10", "12", "9", "999"]
    text = repr(logs)
    for secret in (API_KEY, "root-pw-NEVER-STORE", "cfg-NEVER-STORE"):
        assert secret not in text


async def test_cli_once_json_and_exit_codes(
    hostwinds: FakeHostwinds, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cost-sync --once --json` exits 0 and prints the report; a bad --instance exits 2."""
    import respx

    fleet(hostwinds)
    conn = await asyncpg.connect(db_url)
    await seed(conn, ROWS)
    await conn.close()
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        code = await asyncio.to_thread(cli.main, ["--once", "--json"])
        out = capsys.readouterr().out
        assert code == 0
        report = json.loads(out)
        assert report["updated"] == 10
        assert {u["reason"] for u in report["unpriced"]} == {
            "not_found",
            "unknown_cycle",
            "cycle_not_offered",
            "out_of_range",
        }
        assert await asyncio.to_thread(cli.main, ["--once", "--instance", "424242"]) == 2
        assert "424242" in capsys.readouterr().err
        assert await asyncio.to_thread(cli.main, ["--once", "--dry-run"]) == 0
        assert "no changes" in capsys.readouterr().out


async def test_database_error_during_write_rolls_back_everything(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """A statement failing mid-write leaves values unchanged, records the failure, raises DatabaseError."""
    fleet(hostwinds)
    await seed(pool, ROWS)
    before = await values(pool)
    # The history table going missing makes the run's single write statement fail.
    await pool.execute("ALTER TABLE cost_sync_history RENAME TO cost_sync_history_gone")
    with pytest.raises(DatabaseError, match="UndefinedTable"):
        await run_once(client=client, pool=pool, settings=settings())
    assert await values(pool) == before
    run = await pool.fetchrow("SELECT outcome, updated, error FROM cost_sync_runs")
    assert (run["outcome"], run["updated"]) == ("failed", 0)
    assert "cost_sync_history" in run["error"]
