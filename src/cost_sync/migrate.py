"""Apply ``sql/`` migrations in order, each once, each in its own transaction, with a checksum.

Files named ``NNNN_purpose.sql`` are migrations; ``rollback/`` and ``verify/`` hold a file of the
same name each; ``ledger.sql`` creates the ledger table. An applied file whose content changed is
refused before anything runs: migrations are immutable, a change is a new file. Concurrent runs
are serialised by a PostgreSQL advisory lock, waited for at most ``lock_timeout`` seconds.
Driver errors become :class:`~cost_sync.errors.MigrationError` through
:func:`cost_sync.db.database_errors`, the one mapping of driver exceptions.
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

from cost_sync.db import database_errors
from cost_sync.errors import LockTimeout, MigrationError, MissingSchemaError
from cost_sync.sqlfiles import sql_dir

__all__ = [
    "MIGRATE_HINT",
    "MIGRATE_LOCK_KEY",
    "NO_PLATFORM_TABLE",
    "Migration",
    "applied",
    "check",
    "discover",
    "migrate",
    "require_platform_table",
    "require_schema",
    "rollback",
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

log = structlog.get_logger(__name__)

#: A connection of its own or one borrowed from a pool.
_Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

#: Advisory lock key serialising `cost-sync migrate` runs (ASCII "cs-migr").
MIGRATE_LOCK_KEY = 0x63732D6D696772
#: Default bound on the wait for another migration to finish.
LOCK_TIMEOUT_SECONDS = 30.0
_LOCK_POLL_SECONDS = 0.2
_NAME = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")
_RAISED = re.compile(r'invalid input syntax for type integer: "cost-sync: (?P<message>.*)"', re.S)


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
    if await conn.fetchval("SELECT to_regclass('cost_sync_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT name, checksum FROM cost_sync_migrations")
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
async def _migration_lock(conn: asyncpg.Connection, timeout: float) -> AsyncIterator[None]:
    """Hold the migration advisory lock; LockTimeout if another migration keeps it past ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with database_errors("cannot take the migration lock", error=MigrationError):
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATE_LOCK_KEY):
            if loop.time() >= deadline:
                raise LockTimeout(
                    f"another `cost-sync migrate` has held the migration lock for over {timeout:g} s; "
                    "let it finish (or stop it) and run this again"
                )
            await asyncio.sleep(_LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        with database_errors("cannot release the migration lock", error=MigrationError):
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)


async def require_platform_table(conn: _Conn) -> None:
    """Return when the platform's ``vps_instances`` table is visible; else raise
    :class:`~cost_sync.errors.MissingSchemaError` (exit 2) with :data:`NO_PLATFORM_TABLE`."""
    with database_errors("cannot look for the vps_instances table"):
        found = await conn.fetchval("SELECT to_regclass('vps_instances') IS NOT NULL")
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
    async with _migration_lock(conn, lock_timeout):
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
            with database_errors(
                f"{migration.name}.sql failed, nothing of it was applied", error=MigrationError
            ):
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO cost_sync_migrations (name, checksum) VALUES ($1, $2)",
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    # A guard's own words (raised as a cast error, see _RAISED) name what to fix.
                    raise _explain(migration, exc) from None
            log.info("migrate.applied", migration=migration.name)
            names.append(migration.name)
        return names


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


async def rollback(
    conn: asyncpg.Connection,
    version: str,
    migrations: list[Migration] | None = None,
    *,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> str:
    """Run one migration's rollback file and forget it in the ledger, in one transaction."""
    migrations = discover() if migrations is None else migrations
    matching = [m for m in migrations if version in (m.version, m.name)]
    if not matching:
        raise MigrationError(f"no migration {version!r} (known: {', '.join(m.version for m in migrations)})")
    migration = matching[0]
    if migration.rollback is None:
        raise MigrationError(f"{migration.name}.sql has no rollback file")
    async with _migration_lock(conn, lock_timeout):
        with database_errors(f"rollback of {migration.name}.sql failed", error=MigrationError):
            await conn.execute(_ledger_sql())
            async with conn.transaction():
                await conn.execute(migration.rollback)
                await conn.execute("DELETE FROM cost_sync_migrations WHERE name = $1", migration.name)
    log.info("migrate.rolled_back", migration=migration.name)
    return migration.name
