"""Integration fixtures: a respx-mocked Hostwinds fed from a fleet dict, a pool, seeded rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import respx

from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.settings import Settings
from tests.fakes import API_KEY, PLANS, URL, FakeHostwinds, instance

__all__ = ["API_KEY", "PLANS", "URL", "FakeHostwinds", "instance"]


@pytest.fixture
def hostwinds() -> FakeHostwinds:
    """An empty fake Hostwinds; tests add instances."""
    return FakeHostwinds()


@pytest_asyncio.fixture
async def client(hostwinds: FakeHostwinds) -> AsyncIterator[HostwindsClient]:
    """A real HostwindsClient whose HTTP goes to the fake through respx."""

    async def no_sleep(_: float) -> None:
        return None

    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        async with httpx.AsyncClient() as http:
            yield HostwindsClient(http, API_KEY, url=URL, requests_per_second=None, sleep=no_sleep)


@pytest_asyncio.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh, migrated database."""
    p = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    assert p is not None
    try:
        yield p
    finally:
        await p.close()


def settings(**overrides: Decimal | str) -> Settings:
    """Default settings with Finance overrides."""
    return Settings(overrides=dict(overrides))


async def seed(
    conn: asyncpg.Connection | asyncpg.Pool, rows: list[tuple[str | None, str, str | None]]
) -> dict[str, uuid.UUID]:
    """Insert (hostwinds_instance_id, status, approximate_cost) rows; return hostwinds id -> row id."""
    ids = {}
    for hw_id, status, cost in rows:
        row_id = await conn.fetchval(
            "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost, updated)"
            " VALUES ($1, $2, $3::numeric, '2020-01-01T00:00:00Z') RETURNING id",
            hw_id,
            status,
            cost,
        )
        ids[hw_id or str(row_id)] = row_id
    return ids


async def values(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Decimal | None]:
    """hostwinds_instance_id -> approximate_cost of every row."""
    rows = await conn.fetch("SELECT hostwinds_instance_id, approximate_cost FROM vps_instances")
    return {r["hostwinds_instance_id"]: r["approximate_cost"] for r in rows}


async def dump(conn: asyncpg.Connection | asyncpg.Pool) -> list[list[tuple[Any, ...]]]:
    """Every row of every table cost-sync touches, in a stable order."""
    return [
        [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]
        for table in ("vps_instances", "cost_sync_runs", "cost_sync_history")
    ]


async def hold_lease(conn: asyncpg.Connection | asyncpg.Pool, seconds: float = 3600) -> uuid.UUID:
    """Take the run lease as another process's run would (for ``seconds``); return that run's id."""
    holder = uuid.uuid4()
    await conn.execute(
        "UPDATE cost_sync_lease SET holder_run = $1, holder = 'elsewhere:1', token = token + 1,"
        " taken_at = now(), expires_at = now() + make_interval(secs => $2) WHERE id = 1",
        holder,
        seconds,
    )
    return holder


async def release_lease(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """Give up the lease :func:`hold_lease` took."""
    await conn.execute("UPDATE cost_sync_lease SET expires_at = '-infinity' WHERE id = 1")


async def lease_held(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    """Whether some run holds the run lease now (database clock)."""
    held: bool = await conn.fetchval("SELECT expires_at >= now() FROM cost_sync_lease WHERE id = 1")
    return held
