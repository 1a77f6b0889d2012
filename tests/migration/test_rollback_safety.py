"""migrate --rollback drops data only newest first, saying what and how much, after a yes; migrate
repairs a schema an out-of-order rollback or a hand-dropped object left."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from cost_sync.cli import main as cli
from cost_sync.errors import MigrationError
from cost_sync.store.migrate import applied, check, discover, migrate, rollback, rollback_plan, sql_dir
from tests.migration.test_migrations import fresh, fresh_url, snapshot

pytestmark = pytest.mark.db

__all__ = ["fresh", "fresh_url"]  # fixtures, used by name below

NEWEST = discover()[-1]
#: The migration whose rollback drops a table: the tests roll back what came after it first.
PRICE_LISTS = next(m for m in discover() if m.version == "0008")


async def down_to(conn: asyncpg.Connection, version: str) -> None:
    """Roll back, newest first, every migration applied after ``version``."""
    for later in reversed(discover()):
        if later.version > version:
            await rollback(conn, later.version)


async def some_runs(conn: asyncpg.Connection, n: int) -> None:
    for _ in range(n):
        await conn.execute(
            "INSERT INTO cost_sync_runs (id, trigger, outcome, started, finished, warnings)"
            " VALUES ($1, 'once', 'succeeded', now(), now(), '{w}')",
            uuid.uuid4(),
        )


async def test_rollback_of_0002_with_later_migrations_is_refused(fresh: asyncpg.Connection) -> None:
    """The fault as found: `--rollback 0002` with 0003-0008 applied dropped the ledger and history."""
    await migrate(fresh)
    await some_runs(fresh, 3)
    later = ", ".join(m.version for m in reversed(discover()) if m.version > "0002")
    with pytest.raises(
        MigrationError, match=f"0002 is not the newest applied migration: roll back {later} first"
    ):
        await rollback(fresh, "0002")
    with pytest.raises(MigrationError, match="not the newest"):
        await rollback_plan(fresh, "0002")
    assert await fresh.fetchval("SELECT count(*) FROM cost_sync_runs") == 3
    assert await check(fresh) == []
    # Second way: a migration that is not applied at all.
    await rollback(fresh, NEWEST.version)
    with pytest.raises(MigrationError, match="is not applied"):
        await rollback(fresh, NEWEST.version)


async def test_the_plan_names_what_is_dropped_with_row_counts(fresh: asyncpg.Connection) -> None:
    """Tables with their rows, columns with their values, views and indexes by name."""
    await migrate(fresh)
    await some_runs(fresh, 2)
    await fresh.execute(
        "INSERT INTO cost_sync_price_lists (managed, drive_type, plan_key, plans, observed, run_id)"
        " VALUES (false, 'ssd', 'id', '{}', now(), gen_random_uuid())"
    )
    await down_to(fresh, "0008")
    plan = await rollback_plan(fresh, "0008")
    assert [d.describe() for d in plan.drops] == ["table cost_sync_price_lists (1 rows)"]
    await rollback(fresh, "0008")
    plan = await rollback_plan(fresh, "0007")
    assert "column cost_sync_runs.warnings (2 values)" in [d.describe() for d in plan.drops]
    assert plan.loses_data


def cli_env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", url)


async def test_cli_rollback_needs_yes_without_a_terminal(
    fresh_url: str,
    fresh: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No terminal, no --yes: exit 2, the drops listed, nothing dropped; --yes drops and says what."""
    await migrate(fresh)
    await down_to(fresh, PRICE_LISTS.version)
    await some_runs(fresh, 2)
    cli_env(monkeypatch, fresh_url)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115, ASYNC230 - no terminal
    code = await asyncio.to_thread(cli.main, ["migrate", "--rollback", PRICE_LISTS.version])
    err = capsys.readouterr().err
    assert code == 2
    assert f"rolling back {PRICE_LISTS.name} drops: table cost_sync_price_lists (0 rows)" in err
    assert "pass --yes to confirm" in err
    assert PRICE_LISTS.name in await applied(fresh)
    # The old spelling of the fault, through the command line: refused before asking anything.
    assert await asyncio.to_thread(cli.main, ["migrate", "--rollback", "0002", "--yes"]) == 1
    assert "0002 is not the newest applied migration" in capsys.readouterr().err
    assert await fresh.fetchval("SELECT count(*) FROM cost_sync_runs") == 2
    code = await asyncio.to_thread(
        cli.main, ["migrate", "--rollback", PRICE_LISTS.version, "--yes", "--json"]
    )
    assert code == 0
    assert f'"migration": "{PRICE_LISTS.name}"' in capsys.readouterr().out
    assert PRICE_LISTS.name not in await applied(fresh)


def test_cli_rollback_asks_on_a_terminal(fresh_url: str) -> None:
    """On a real terminal: "no" keeps everything (exit 1), "yes" rolls back (exit 0)."""
    asyncio.run(_migrated(fresh_url))
    env = {**os.environ, "COST_SYNC_DATABASE_URL": fresh_url, "COST_SYNC_LOG_LEVEL": "error"}
    command = [str(Path(sys.executable).with_name("cost-sync")), "migrate", "--rollback", PRICE_LISTS.version]
    for answer, code in ((b"no\n", 1), (b"yes\n", 0)):
        leader, follower = pty.openpty()
        process = subprocess.Popen(
            command, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        os.close(follower)
        # The terminal keeps the answer until the process reads its line.
        os.write(leader, answer)
        _, err = process.communicate(timeout=30)
        os.close(leader)
        assert process.returncode == code, err.decode()
        assert b"drops: table cost_sync_price_lists" in err
    assert PRICE_LISTS.name not in asyncio.run(_applied(fresh_url))


async def _migrated(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await down_to(conn, PRICE_LISTS.version)
    finally:
        await conn.close()


async def _applied(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        return await applied(conn)
    finally:
        await conn.close()


async def test_migrate_repairs_what_an_out_of_order_rollback_left(fresh: asyncpg.Connection) -> None:
    """The state the old `--rollback 0002` left (its tables dropped, 0003-0008 still in the ledger):
    `migrate` re-applies 0002 and every later migration that no longer verifies."""
    await migrate(fresh)
    migrated = await snapshot(fresh)
    await fresh.execute((sql_dir() / "rollback" / "0002_cost_sync_runs_and_history.sql").read_text())
    await fresh.execute("DELETE FROM cost_sync_migrations WHERE name = '0002_cost_sync_runs_and_history'")
    assert await migrate(fresh) == ["0002_cost_sync_runs_and_history"]
    assert await check(fresh) == []
    assert await snapshot(fresh) == migrated


async def test_migrate_repairs_a_hand_dropped_column(fresh: asyncpg.Connection) -> None:
    """Second way: a column dropped by hand, the ledger untouched: migrate restores it."""
    await migrate(fresh)
    migrated = await snapshot(fresh)
    await fresh.execute("ALTER TABLE cost_sync_runs DROP COLUMN warnings")
    assert await check(fresh) != []
    assert await migrate(fresh) == []
    assert await check(fresh) == []
    assert await snapshot(fresh) == migrated
