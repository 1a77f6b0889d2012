"""approve under contention: a row lock, a run replacing the held change while approve waits."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import asyncpg
import pytest

from cost_sync.cli import main as cli
from tests.integration.conftest import FakeHostwinds, instance, lease_held, seed, values
from tests.integration.test_trust import cost_sync, env, scaled_plans

pytestmark = pytest.mark.db

__all__ = ["env"]  # a fixture, used by name below


async def held_at_tenfold(hostwinds: FakeHostwinds, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Row 1 priced 9.99, then a x10 price held (99.90)."""
    hostwinds.instances = [instance(1)]
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None)])
    await conn.close()
    assert (await cost_sync(capsys, "--once"))[0] == 0
    hostwinds.plans = scaled_plans("10")
    assert (await cost_sync(capsys, "--once"))[0] == 0


async def hold_lease_row(conn: asyncpg.Connection) -> asyncpg.transaction.Transaction:
    """Lock the run lease's row as a run taking or writing under the lease does; return the transaction
    (the lease is nobody's until it ends)."""
    tx = conn.transaction()
    await tx.start()
    await conn.execute("SELECT 1 FROM cost_sync_lease WHERE id = 1 FOR UPDATE")
    return tx


async def wait_for_lock_poll(conn: asyncpg.Connection) -> None:
    """Until another backend waits for the run lease (approve read what it approves before)."""
    deadline = time.monotonic() + 20
    while not await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query LIKE '%cost_sync_lease%'"
    ):
        assert time.monotonic() < deadline, "approve never asked for the run lease"
        await asyncio.sleep(0.05)


async def test_approve_waits_for_a_row_lock_only_as_long_as_lock_timeout(
    hostwinds: FakeHostwinds,
    db_url: str,
    env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row locked by another transaction: approve gives up after lock_timeout_seconds, exit 1, releases
    the run lock; a run started meanwhile is not failed by it."""
    await held_at_tenfold(hostwinds, db_url, capsys)
    monkeypatch.setenv("COST_SYNC_DATABASE_LOCK_TIMEOUT_SECONDS", "1")
    holder = await asyncpg.connect(db_url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM vps_instances WHERE hostwinds_instance_id = '1' FOR UPDATE")
        started = time.monotonic()
        code = await asyncio.to_thread(cli.main, ["approve", "--instance", "1"])
        waited = time.monotonic() - started
        err = capsys.readouterr().err
        await tx.rollback()
    finally:
        await holder.close()
    assert code == 1
    assert "approve waited 1 s for vps_instances rows locked by another transaction and gave up" in err
    assert waited < 15  # the unbounded wait was 44 s with a 5 s setting
    conn = await asyncpg.connect(db_url)
    assert (await values(conn))["1"] == Decimal("9.99")
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 1
    # The run lease was released: a run gets it at once.
    assert not await lease_held(conn)
    assert (await cost_sync(capsys, "approve", "--instance", "1"))[0] == 0
    # approve held the run lease for its write: its ledger row says when it took it.
    approved = await conn.fetchrow(
        "SELECT outcome, lease_taken FROM cost_sync_runs WHERE trigger = 'approve'"
    )
    await conn.close()
    assert approved["outcome"] == "succeeded"
    assert approved["lease_taken"] is not None


async def test_approve_refuses_a_held_change_replaced_while_it_waited(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held 99.90 when approve starts; a run replaces it with 149.85 while approve waits for the run lock:
    approve refuses (exit 1) and the row keeps its value, though a run would compute 149.85 now."""
    await held_at_tenfold(hostwinds, db_url, capsys)
    runner, watcher = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    tx = await hold_lease_row(runner)
    approving = asyncio.create_task(cost_sync(capsys, "approve", "--instance", "1"))
    await wait_for_lock_poll(watcher)
    # The "run" holding the lock proposes x15 now, as the guard's upsert records it: a new value
    # under the new run's id. Hostwinds says x15 too, so a re-price agrees with the new value.
    hostwinds.plans = scaled_plans("15")
    await runner.execute(
        "UPDATE cost_sync_held_changes SET proposed_cost = 149.85, run_id = $1, since = now()", uuid.uuid4()
    )
    await tx.commit()
    code, out = await approving
    assert code == 1
    assert "replaced the held change while approving: it proposes 149.85 now, not 99.90" in out
    assert (await values(runner))["1"] == Decimal("9.99")
    assert await runner.fetchval("SELECT count(*) FROM cost_sync_history WHERE approved") == 0
    await runner.close()
    await watcher.close()


async def test_approve_refuses_a_held_change_that_went_away_while_it_waited(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Second way: the run holding the lock no longer proposes the change (it cleared it)."""
    await held_at_tenfold(hostwinds, db_url, capsys)
    runner, watcher = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    tx = await hold_lease_row(runner)
    approving = asyncio.create_task(cost_sync(capsys, "approve", "--all"))
    await wait_for_lock_poll(watcher)
    await runner.execute("DELETE FROM cost_sync_held_changes")
    await tx.commit()
    code, out = await approving
    assert code == 1
    assert "refused 1: the held change is gone" in out
    assert (await values(runner))["1"] == Decimal("9.99")
    await runner.close()
    await watcher.close()
