"""The contract suite's fixture: each store pair, the real one on PostgreSQL and the in-memory double.

A test takes ``backend`` and runs once per implementation: what it observes goes through the
store protocols (:class:`RunStore`, :class:`TrustStoreProtocol`) only. What the protocols cannot
do, such as the platform adding a row or changing a value behind cost-sync's back, is a
:class:`Backend` method done the implementation's own way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio

from cost_sync.store.memory import MemoryStore, MemoryTrustStore
from cost_sync.store.postgres import Store
from cost_sync.store.protocols import RunStore, TrustStoreProtocol
from cost_sync.store.sqlfiles import sql_dir
from cost_sync.store.trust import TrustStore
from tests.conftest import Databases


@dataclass
class Backend:
    """One implementation of both protocols, and the platform's side of its rows."""

    name: str
    store: RunStore
    trust: TrustStoreProtocol
    memory: MemoryStore | None = None
    pool: asyncpg.Pool | None = None

    def another_store(self) -> RunStore:
        """A second store on the same database, as another process would hold."""
        if self.pool is not None:
            return Store(self.pool)
        return self.store

    async def add_row(
        self, hostwinds_instance_id: str | None, status: str = "active", cost: str | None = None
    ) -> uuid.UUID:
        """A row the platform created."""
        if self.memory is not None:
            return self.memory.add_row(hostwinds_instance_id, status, cost).id
        assert self.pool is not None
        row_id: uuid.UUID = await self.pool.fetchval(
            "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost)"
            " VALUES ($1, $2, $3::numeric) RETURNING id",
            hostwinds_instance_id,
            status,
            cost,
        )
        return row_id

    async def platform_sets(
        self, row_id: uuid.UUID, *, cost: str | None = None, status: str | None = None
    ) -> None:
        """The platform changes a row's value or status behind cost-sync's back."""
        if self.memory is not None:
            row = self.memory.rows[row_id]
            self.memory.rows[row_id] = replace(
                row,
                approximate_cost=row.approximate_cost if cost is None else Decimal(cost),
                status=row.status if status is None else status,
            )
            return
        assert self.pool is not None
        await self.pool.execute(
            "UPDATE vps_instances SET approximate_cost = coalesce($2::numeric, approximate_cost),"
            " status = coalesce($3, status) WHERE id = $1",
            row_id,
            cost,
            status,
        )


@pytest_asyncio.fixture
async def postgres_backend(databases: Databases, migrated_template: str) -> AsyncIterator[Backend]:
    """The real stores on a fresh database, with the platform's tenant tables (attribution runs)."""
    url = await databases.create(template=migrated_template)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    assert pool is not None
    try:
        await pool.execute((sql_dir() / "fixtures" / "tenants.sql").read_text(encoding="utf-8"))
        yield Backend("postgres", Store(pool), TrustStore(pool), pool=pool)
    finally:
        await pool.close()


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.db)])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each implementation in turn: the in-memory doubles, then the real stores."""
    if request.param == "memory":
        memory = MemoryStore()
        return Backend("memory", memory, MemoryTrustStore(memory), memory=memory)
    postgres: Backend = request.getfixturevalue("postgres_backend")
    return postgres
