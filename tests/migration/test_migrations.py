"""The migrations in sql/: naming, idempotence, both starting states, rollback, immutability."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from cost_sync.cli import main as cli
from cost_sync.errors import LockTimeout, MigrationError
from cost_sync.store.migrate import MIGRATE_LOCK_KEY, applied, check, discover, migrate, rollback, sql_dir
from tests.conftest import FIXTURE_TABLE, Databases

pytestmark = pytest.mark.db

SNAPSHOT_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, numeric_precision, numeric_scale,
               column_default, is_nullable
        FROM information_schema.columns
        WHERE table_schema = current_schema()
        ORDER BY table_name, column_name""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE connamespace = current_schema()::regnamespace
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = current_schema() ORDER BY 1, 2""",
    "comments": """
        SELECT c.relname, a.attname, col_description(c.oid, a.attnum)
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = current_schema()::regnamespace AND a.attnum > 0
          AND col_description(c.oid, a.attnum) IS NOT NULL
        ORDER BY 1, 2""",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[object, ...]]]:
    """The schema as the catalog describes it, ledger timestamps aside."""
    return {key: [tuple(row) for row in await conn.fetch(query)] for key, query in SNAPSHOT_QUERIES.items()}


@pytest_asyncio.fixture
async def fresh_url(empty_db_url: str) -> str:
    """URL of a new database holding only the documented vps_instances table."""
    conn = await asyncpg.connect(empty_db_url)
    try:
        await conn.execute(FIXTURE_TABLE)
    finally:
        await conn.close()
    return empty_db_url


@pytest_asyncio.fixture
async def fresh(fresh_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the ``fresh_url`` database."""
    conn = await asyncpg.connect(fresh_url)
    try:
        yield conn
    finally:
        await conn.close()


def test_migration_files_are_numbered_with_companions() -> None:
    """Every migration is NNNN_purpose.sql, numbered from 0001 without gaps, with rollback and verify."""
    migrations = discover()
    assert [m.version for m in migrations] == [f"{i:04d}" for i in range(1, len(migrations) + 1)]
    for migration in migrations:
        assert re.fullmatch(r"\d{4}_[a-z0-9_]+", migration.name)
        assert migration.rollback is not None, migration.name
        assert migration.verify is not None, migration.name


def test_migrations_use_no_functions_or_do_blocks() -> None:
    """NileDB has no CREATE FUNCTION, DO, triggers or policies: the SQL must not need them."""
    forbidden = re.compile(
        r"\b(CREATE\s+(OR\s+REPLACE\s+)?FUNCTION|DO\s+\$|CREATE\s+TRIGGER|CREATE\s+POLICY)", re.I
    )
    for path in sql_dir().rglob("*.sql"):
        assert not forbidden.search(path.read_text()), path


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    """A .sql file that is not NNNN_purpose.sql is an error, not silently skipped."""
    (tmp_path / "1_add.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_purpose"):
        discover(tmp_path)


async def test_apply_twice_is_a_noop(fresh: asyncpg.Connection) -> None:
    """The second migrate applies nothing and leaves the schema as the first left it."""
    first = await migrate(fresh)
    assert first == [m.name for m in discover()]
    before = await snapshot(fresh)
    assert await migrate(fresh) == []
    assert await snapshot(fresh) == before
    assert await check(fresh) == []


async def test_migration_files_are_rerunnable_by_hand(fresh: asyncpg.Connection) -> None:
    """Running each file's SQL again outside the ledger is harmless (the seed's failure mode)."""
    await migrate(fresh)
    before = await snapshot(fresh)
    for migration in discover():
        async with fresh.transaction():
            await fresh.execute(migration.sql)
    assert await snapshot(fresh) == before


async def test_both_starting_states_end_in_the_same_schema(
    fresh: asyncpg.Connection, databases: Databases
) -> None:
    """A table without the column and the documented table with a bare column end up identical."""
    await migrate(fresh)
    documented = await snapshot(fresh)

    other_url = await databases.create()
    other = await asyncpg.connect(other_url)
    try:
        await other.execute(FIXTURE_TABLE)
        await other.execute("ALTER TABLE vps_instances DROP COLUMN approximate_cost")
        await other.execute(
            "INSERT INTO vps_instances (hostwinds_instance_id, status) VALUES ('1', 'active')"
        )
        await migrate(other)
        assert await snapshot(other) == documented
        # A new column is filled with the default, as the seed migration does.
        assert await other.fetchval("SELECT approximate_cost FROM vps_instances") == 0
    finally:
        await other.close()


async def test_existing_values_are_kept(fresh: asyncpg.Connection) -> None:
    """Migrating the documented table keeps each row's value, NULLs included."""
    await fresh.execute(
        "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost)"
        " VALUES ('1', 'active', 12.34), ('2', 'active', NULL)"
    )
    await migrate(fresh)
    rows = await fresh.fetch("SELECT hostwinds_instance_id, approximate_cost FROM vps_instances ORDER BY 1")
    assert [(r[0], r[1]) for r in rows] == [("1", Decimal("12.34")), ("2", None)]


async def test_negative_values_fail_naming_rows_and_change_nothing(
    fresh: asyncpg.Connection,
) -> None:
    """Existing negative values stop the migration with their row ids; no data or schema changes."""
    bad_id = await fresh.fetchval(
        "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost)"
        " VALUES ('1', 'active', -5) RETURNING id"
    )
    before = await snapshot(fresh)
    with pytest.raises(MigrationError) as caught:
        await migrate(fresh)
    assert str(bad_id) in str(caught.value)
    assert "negative approximate_cost" in str(caught.value)
    after = await snapshot(fresh)
    # Only the ledger table may have appeared; vps_instances is exactly as it was.
    strip = {k: [r for r in v if "cost_sync_migrations" not in str(r)] for k, v in after.items()}
    assert strip == before
    assert await fresh.fetchval("SELECT approximate_cost FROM vps_instances") == -5
    assert await applied(fresh) == {}


async def test_rollback_then_reapply(fresh: asyncpg.Connection) -> None:
    """Rolling 0001 back (the later ones first) removes its index and CHECK, keeps the data; migrate
    restores the schema."""
    await migrate(fresh)
    await fresh.execute(
        "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost)"
        " VALUES ('1', 'active', 7.50)"
    )
    migrated = await snapshot(fresh)
    for migration in reversed(discover()[1:]):
        await rollback(fresh, migration.version)
    assert await rollback(fresh, "0001") == "0001_vps_instances_approximate_cost"
    problems = await check(fresh)
    assert any("not applied" in p for p in problems)
    assert any("chk_vps_approximate_cost_positive" in p for p in problems)
    assert str(await fresh.fetchval("SELECT approximate_cost FROM vps_instances")) == "7.50"
    assert await migrate(fresh) == [m.name for m in discover()]
    assert await snapshot(fresh) == migrated


async def test_every_migration_rolls_back_newest_first_and_reapplies(fresh: asyncpg.Connection) -> None:
    """Each rollback file undoes its migration (check names it as not applied); migrate then brings
    back exactly the schema it had."""
    applied_names = await migrate(fresh)
    migrated = await snapshot(fresh)
    names = [m.name for m in discover()]
    assert applied_names == names
    for name in reversed(names):
        assert await rollback(fresh, name[:4]) == name
        assert any(name in problem and "not applied" in problem for problem in await check(fresh)), name
    assert await migrate(fresh) == names
    assert await snapshot(fresh) == migrated
    assert await check(fresh) == []


async def test_changed_applied_file_is_refused(fresh: asyncpg.Connection, tmp_path: Path) -> None:
    """Editing an applied file is refused before anything runs, including newer files."""
    folder = tmp_path / "sql"
    shutil.copytree(sql_dir(), folder)
    await migrate(fresh, discover(folder))
    first = folder / "0001_vps_instances_approximate_cost.sql"
    first.write_text(first.read_text() + "\n-- edited after release\n")
    (folder / "0099_marker.sql").write_text("CREATE TABLE marker_should_not_exist (id int);")
    with pytest.raises(MigrationError, match="immutable"):
        await migrate(fresh, discover(folder))
    assert await fresh.fetchval("SELECT to_regclass('marker_should_not_exist')") is None
    assert any("checksum" in p for p in await check(fresh, discover(folder)))


async def test_check_fails_on_half_migrated_database(fresh: asyncpg.Connection) -> None:
    """With only the first migration applied, check lists the second as missing."""
    migrations = discover()
    await migrate(fresh, migrations[:1])
    problems = await check(fresh, migrations)
    assert f"{migrations[1].name}.sql is not applied" in problems
    assert all(not p.startswith(migrations[0].name + ".sql") for p in problems)


async def test_concurrent_migrations_are_serialised(fresh_url: str) -> None:
    """Two migrate runs at once both succeed and each file is applied exactly once, in order (the
    lock is taken per migration transaction, so the two may share the work)."""
    first, second = await asyncpg.connect(fresh_url), await asyncpg.connect(fresh_url)
    try:
        results = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(results[0] + results[1]) == [m.name for m in discover()]
        order = await first.fetch("SELECT name FROM cost_sync_migrations ORDER BY applied, name")
        assert [r["name"] for r in order] == [m.name for m in discover()]
        assert await first.fetchval("SELECT count(*) FROM cost_sync_migrations") == len(discover())
    finally:
        await first.close()
        await second.close()


async def test_migration_lock_wait_is_bounded(fresh_url: str) -> None:
    """While another session holds the migration lock, migrate gives up after lock_timeout, clearly."""
    holder, waiter = await asyncpg.connect(fresh_url), await asyncpg.connect(fresh_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK_KEY)
        with pytest.raises(LockTimeout, match="another `cost-sync migrate`"):
            await migrate(waiter, lock_timeout=0.3)
        with pytest.raises(LockTimeout):
            await rollback(waiter, "0001", lock_timeout=0.3)
        assert await applied(waiter) == {}
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)
        assert await migrate(waiter, lock_timeout=0.3) == [m.name for m in discover()]
    finally:
        await holder.close()
        await waiter.close()


async def test_cli_check_exit_codes(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cost-sync migrate --check` exits 1 listing what is missing, then 0 after `cost-sync migrate`."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", fresh_url)
    assert await asyncio.to_thread(cli.main, ["migrate", "--check"]) == 1
    out = capsys.readouterr().out
    assert "0001_vps_instances_approximate_cost.sql is not applied" in out
    assert await asyncio.to_thread(cli.main, ["migrate"]) == 0
    assert await asyncio.to_thread(cli.main, ["migrate", "--check"]) == 0
    assert "schema verified" in capsys.readouterr().out


def test_cli_unreachable_database_names_host_not_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable database is one line naming host and port, never the password; exit 1."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", "postgresql://app:s3cr3t-pw@127.0.0.1:1/penguin")
    assert cli.main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:1/penguin" in err
    assert "s3cr3t-pw" not in err
    assert len(err.strip().splitlines()) == 1


async def test_check_refuses_a_tenant_id_column_on_cost_sync_tables(fresh: asyncpg.Connection) -> None:
    """NileDB would make a table with tenant_id a tenant table: verification flags one on cost_sync_*."""
    await migrate(fresh)
    assert await check(fresh) == []
    await fresh.execute("ALTER TABLE cost_sync_tenant_costs ADD COLUMN tenant_id UUID")
    problems = await check(fresh)
    assert any("tenant_id" in p and "cost_sync_tenant_costs" in p for p in problems)


async def test_rollback_of_0004_drops_the_view_and_table_only(fresh: asyncpg.Connection) -> None:
    """Rolling back 0004 (the later ones first) removes cost_sync_tenant_costs and its view; migrate
    brings them back identical."""
    await migrate(fresh)
    migrated = await snapshot(fresh)
    later = [m for m in discover() if m.version > "0004"]
    for migration in reversed(later):
        await rollback(fresh, migration.version)
    assert await rollback(fresh, "0004") == "0004_cost_sync_tenant_costs"
    assert await fresh.fetchval("SELECT to_regclass('cost_sync_tenant_monthly')") is None
    assert await fresh.fetchval("SELECT to_regclass('cost_sync_tenant_costs')") is None
    assert await fresh.fetchval("SELECT to_regclass('cost_sync_history')") is not None
    assert await migrate(fresh) == ["0004_cost_sync_tenant_costs", *(m.name for m in later)]
    assert await snapshot(fresh) == migrated
