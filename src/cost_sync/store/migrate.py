"""Apply ``sql/`` migrations in order, each once, each in its own transaction, with a checksum.

Files named ``NNNN_purpose.sql`` are migrations; ``rollback/`` and ``verify/`` hold a file of the
same name each; ``ledger.sql`` creates the ledger table. An applied file whose content changed is
refused before anything runs: migrations are immutable, a change is a new file. Concurrent runs
are serialised by a transaction-level PostgreSQL advisory lock taken in each of their transactions
(waited for at most ``lock_timeout`` seconds each), so no lock outlives a transaction and a pooler
in transaction mode (PgBouncer, NileDB) cannot hand one to another client.
Driver errors become :class:`~cost_sync.errors.MigrationError` through
:func:`cost_sync.store.db.database_errors`, the one mapping of driver exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
import structlog

from cost_sync.errors import LockTimeout, MigrationError, MissingSchemaError
from cost_sync.store.db import database_errors
from cost_sync.store.sqlfiles import queries, sql_dir

__all__ = [
    "MIGRATE_HINT",
    "MIGRATE_LOCK_KEY",
    "NO_PLATFORM_TABLE",
    "Drop",
    "Migration",
    "RollbackPlan",
    "applied",
    "check",
    "discover",
    "migrate",
    "require_platform_table",
    "require_schema",
    "rollback",
    "rollback_plan",
    "sql_dir",
]

#: What to do when :func:`check` finds a problem.
MIGRATE_HINT = "run `cost-sync migrate`"
#: Why nothing can run (or be migrated) against a database without the platform's table: the
#: advice never loops back to `migrate`, which cannot create it.
NO_PLATFORM_TABLE = (
    "this database has no vps_instances table: cost-sync prices the rows the platform creates "
    "there and never creates that table itself; check which database COST_SYNC_DATABASE_URL names"
)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger("cost_sync.migrate")

#: A connection of its own or one borrowed from a pool.
_Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

#: Advisory lock key serialising `cost-sync migrate` runs (ASCII "cs-migr").
MIGRATE_LOCK_KEY = 0x63732D6D696772
#: Default bound on the wait for another migration to finish.
LOCK_TIMEOUT_SECONDS = 30.0
_LOCK_POLL_SECONDS = 0.2
_NAME = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")
_RAISED = re.compile(r'invalid input syntax for type integer: "cost-sync: (?P<message>.*)"', re.S)
_Q = queries("migrate")


@dataclass(frozen=True)
class Migration:
    """One migration file, its rollback and verification companions, and its checksum."""

    name: str
    version: str
    sql: str
    checksum: str
    rollback: str | None
    verify: str | None


def _companion(folder: Path, filename: str) -> str | None:
    path = folder / filename
    return path.read_text(encoding="utf-8") if path.is_file() else None


def discover(folder: Path | None = None) -> list[Migration]:
    """Every migration in ``folder`` (default :func:`sql_dir`) in version order."""
    folder = folder or sql_dir()
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        if path.name == "ledger.sql":
            continue
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: migrations are named NNNN_purpose.sql (lower case, digits, _)"
            )
        text = path.read_text(encoding="utf-8")
        found.append(
            Migration(
                name=path.stem,
                version=match["version"],
                sql=text,
                checksum=hashlib.sha256(text.encode()).hexdigest(),
                rollback=_companion(folder / "rollback", path.name),
                verify=_companion(folder / "verify", path.name),
            )
        )
    versions = [m.version for m in found]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise MigrationError(f"two migrations share version {duplicates[0]}")
    return found


def _ledger_sql(folder: Path | None = None) -> str:
    return ((folder or sql_dir()) / "ledger.sql").read_text(encoding="utf-8")


async def applied(conn: _Conn) -> dict[str, str]:
    """Applied migration name -> checksum; empty when the ledger does not exist yet."""
    if await conn.fetchval(_Q["ledger_exists"]) is None:
        return {}
    rows = await conn.fetch(_Q["applied"])
    return {row["name"]: row["checksum"] for row in rows}


def _changed(migrations: list[Migration], done: dict[str, str]) -> list[str]:
    return [
        f"{m.name}.sql was applied with checksum {done[m.name][:12]}, the file now has "
        f"{m.checksum[:12]}: applied migrations are immutable, add a new file instead"
        for m in migrations
        if m.name in done and done[m.name] != m.checksum
    ]


def _explain(migration: Migration, exc: asyncpg.PostgresError) -> MigrationError:
    raised = _RAISED.search(str(exc))
    reason = raised["message"] if raised else f"{type(exc).__name__}: {exc}"
    return MigrationError(f"{migration.name}.sql failed, nothing of it was applied: {reason}")


@contextlib.asynccontextmanager
async def _locked(conn: asyncpg.Connection, timeout: float) -> AsyncIterator[None]:
    """A transaction holding the migration lock (``pg_try_advisory_xact_lock``, released when it
    ends); LockTimeout if another migration keeps the lock past ``timeout``. The block's errors
    roll the transaction back and pass through."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with database_errors("cannot take the migration lock", error=MigrationError):
            tx = conn.transaction()
            await tx.start()
            try:
                got = await conn.fetchval(_Q["try_lock"], MIGRATE_LOCK_KEY)
            except BaseException:
                await tx.rollback()
                raise
            if got:
                break
            await tx.rollback()
        if loop.time() >= deadline:
            raise LockTimeout(
                f"another `cost-sync migrate` has held the migration lock for over {timeout:g} s; "
                "let it finish (or stop it) and run this again"
            )
        await asyncio.sleep(_LOCK_POLL_SECONDS)
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await tx.rollback()
        raise
    with database_errors("cannot commit the migration", error=MigrationError):
        await tx.commit()


async def require_platform_table(conn: _Conn) -> None:
    """Return when the platform's ``vps_instances`` table is visible; else raise
    :class:`~cost_sync.errors.MissingSchemaError` (exit 2) with :data:`NO_PLATFORM_TABLE`."""
    with database_errors("cannot look for the vps_instances table"):
        found = await conn.fetchval(_Q["platform_table_exists"])
    if not found:
        raise MissingSchemaError(NO_PLATFORM_TABLE)


async def migrate(
    conn: asyncpg.Connection,
    migrations: list[Migration] | None = None,
    *,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> list[str]:
    """Apply every pending migration in order; return the names applied (empty: up to date)."""
    migrations = discover() if migrations is None else migrations
    # 0001 alters the platform's table: without it every later step would fail with a raw error.
    await require_platform_table(conn)
    async with _locked(conn, lock_timeout):
        with database_errors("cannot read the migration ledger", error=MigrationError):
            await conn.execute(_ledger_sql())
            done = await applied(conn)
    changed = _changed(migrations, done)
    if changed:
        raise MigrationError(changed[0])
    names: list[str] = []
    for migration in migrations:
        if migration.name in done:
            continue
        async with _locked(conn, lock_timeout):
            with database_errors(
                f"{migration.name}.sql failed, nothing of it was applied", error=MigrationError
            ):
                # Another `migrate` may have applied it since the ledger was read.
                if await conn.fetchval(_Q["applied_checksum"], migration.name):
                    continue
                try:
                    await conn.execute(migration.sql)
                    await conn.execute(_Q["record_applied"], migration.name, migration.checksum)
                except asyncpg.PostgresError as exc:
                    # A guard's own words (raised as a cast error, see _RAISED) name what to fix.
                    raise _explain(migration, exc) from None
        log.info("migrate.applied", migration=migration.name)
        names.append(migration.name)
    await _repair(conn, migrations, lock_timeout)
    return names


async def _verifies(conn: _Conn, migration: Migration) -> list[str]:
    if migration.verify is None:
        return []
    return [
        f"{migration.name}: {row['check']}: found {row['found']}"
        for row in await conn.fetch(migration.verify)
        if not row["ok"]
    ]


async def _repair(conn: asyncpg.Connection, migrations: list[Migration], lock_timeout: float) -> None:
    """Apply again, in order, each applied migration that does not verify; fail if one still does not.

    Migrations are idempotent (IF NOT EXISTS, DROP ... IF EXISTS then ADD), so this restores what
    an out-of-order rollback or a hand-dropped object took away, and `migrate` never reports
    success on a schema `migrate --check` would fail.
    """
    for migration in migrations:
        with database_errors(f"cannot verify {migration.name}.sql", error=MigrationError):
            if not await _verifies(conn, migration):
                continue
        async with _locked(conn, lock_timeout):
            with database_errors(
                f"{migration.name}.sql failed, nothing of it was applied", error=MigrationError
            ):
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise _explain(migration, exc) from None
        with database_errors(f"cannot verify {migration.name}.sql", error=MigrationError):
            problems = await _verifies(conn, migration)
        if problems:
            raise MigrationError(
                f"{migration.name}.sql was applied again and still does not verify: {problems[0]}"
            )
        log.warning("migrate.repaired", migration=migration.name)


async def check(conn: _Conn, migrations: list[Migration] | None = None) -> list[str]:
    """What is missing or wrong, one line each; empty when every migration is applied and verifies."""
    migrations = discover() if migrations is None else migrations
    with database_errors("cannot check the migrations", error=MigrationError):
        done = await applied(conn)
        problems = [f"{m.name}.sql is not applied" for m in migrations if m.name not in done]
        problems += _changed(migrations, done)
        for migration in migrations:
            if migration.verify is None:
                continue
            for row in await conn.fetch(migration.verify):
                if not row["ok"]:
                    problems.append(f"{migration.name}: {row['check']}: found {row['found']}")
    return problems


async def require_schema(pool: asyncpg.Pool) -> None:
    """Return when every migration is applied and verifies (as ``migrate --check``); else raise
    :class:`~cost_sync.errors.MissingSchemaError` (exit 2) naming the first problem and the fix,
    so a run fails before its first Hostwinds call."""
    with database_errors("cannot check the schema"):
        async with pool.acquire() as conn:
            await require_platform_table(conn)
            problems = await check(conn)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MissingSchemaError(f"the database schema is not ready: {problems[0]}{more}; {MIGRATE_HINT}")


#: What a rollback file drops, as its statements say it (every rollback file is written this way).
_DROP_TABLE = re.compile(r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<table>\w+)", re.I | re.M)
_DROP_COLUMN = re.compile(
    r"^\s*ALTER\s+TABLE\s+(?P<table>\w+)\s+DROP\s+COLUMN\s+(?:IF\s+EXISTS\s+)?(?P<column>\w+)",
    re.I | re.M,
)
_DROP_OTHER = re.compile(
    r"^\s*(?:ALTER\s+TABLE\s+\w+\s+)?DROP\s+(?P<kind>VIEW|INDEX|CONSTRAINT|FUNCTION)\s+"
    r"(?:IF\s+EXISTS\s+)?(?P<name>\w+)",
    re.I | re.M,
)


@dataclass(frozen=True)
class Drop:
    """One thing a rollback drops, and how much data goes with it (None: no data of its own)."""

    kind: str
    name: str
    rows: int | None

    def describe(self) -> str:
        """``table cost_sync_runs (12 rows)``."""
        if self.rows is None:
            return f"{self.kind} {self.name}"
        unit = "rows" if self.kind == "table" else "values"
        return f"{self.kind} {self.name} ({self.rows} {unit})"


@dataclass(frozen=True)
class RollbackPlan:
    """The migration a rollback would undo and everything it would drop."""

    name: str
    drops: list[Drop]

    @property
    def loses_data(self) -> bool:
        """True when a dropped table or column holds anything."""
        return any(d.rows for d in self.drops)


def _newest_applied(migrations: list[Migration], done: dict[str, str], version: str) -> Migration:
    """The migration ``version`` names, if it is the newest applied one; else MigrationError."""
    matching = [m for m in migrations if version in (m.version, m.name)]
    if not matching:
        raise MigrationError(f"no migration {version!r} (known: {', '.join(m.version for m in migrations)})")
    migration = matching[0]
    if migration.rollback is None:
        raise MigrationError(f"{migration.name}.sql has no rollback file")
    if migration.name not in done:
        raise MigrationError(f"{migration.name}.sql is not applied: there is nothing to roll back")
    newer = [m.version for m in migrations if m.name in done and m.version > migration.version]
    if newer:
        # Later migrations build on this one: rolling it back alone leaves a schema no
        # `cost-sync migrate` can repair.
        raise MigrationError(
            f"{migration.version} is not the newest applied migration: roll back "
            f"{', '.join(reversed(newer))} first, newest first, one at a time"
        )
    return migration


async def _drops(conn: _Conn, rollback_sql: str) -> list[Drop]:
    drops: list[Drop] = []
    for match in _DROP_TABLE.finditer(rollback_sql):
        table = match["table"]
        if await conn.fetchval(_Q["table_exists"], table) is None:
            continue
        rows = await conn.fetchval(f'SELECT count(*) FROM "{table}"')
        drops.append(Drop("table", table, int(rows)))
    for match in _DROP_COLUMN.finditer(rollback_sql):
        table, column = match["table"], match["column"]
        exists = await conn.fetchval(_Q["column_exists"], table, column)
        if not exists:
            continue
        values = await conn.fetchval(f'SELECT count("{column}") FROM "{table}"')
        drops.append(Drop("column", f"{table}.{column}", int(values)))
    for match in _DROP_OTHER.finditer(rollback_sql):
        drops.append(Drop(match["kind"].lower(), match["name"], None))
    return drops


async def rollback_plan(conn: _Conn, version: str, migrations: list[Migration] | None = None) -> RollbackPlan:
    """What ``rollback(version)`` would drop, with row counts; MigrationError if it may not run.

    Only the newest applied migration may be rolled back: newest first, one at a time.
    """
    migrations = discover() if migrations is None else migrations
    with database_errors("cannot plan the rollback", error=MigrationError):
        migration = _newest_applied(migrations, await applied(conn), version)
        assert migration.rollback is not None
        return RollbackPlan(migration.name, await _drops(conn, migration.rollback))


async def rollback(
    conn: asyncpg.Connection,
    version: str,
    migrations: list[Migration] | None = None,
    *,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> str:
    """Run the newest applied migration's rollback file and forget it in the ledger, in one transaction.

    ``version`` must name the newest applied migration (MigrationError otherwise, nothing run).
    """
    migrations = discover() if migrations is None else migrations
    async with _locked(conn, lock_timeout):
        with database_errors("cannot read the migration ledger", error=MigrationError):
            await conn.execute(_ledger_sql())
            done = await applied(conn)
        migration = _newest_applied(migrations, done, version)
        assert migration.rollback is not None
        with database_errors(f"rollback of {migration.name}.sql failed", error=MigrationError):
            await conn.execute(migration.rollback)
            await conn.execute(_Q["forget_applied"], migration.name)
    log.info("migrate.rolled_back", migration=migration.name)
    return migration.name
