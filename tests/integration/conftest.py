"""Integration fixtures: a respx-mocked Hostwinds fed from a fleet dict, a pool, seeded rows."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import httpx
import pytest
import pytest_asyncio
import respx

from cost_sync.hostwinds import HostwindsClient
from cost_sync.settings import Settings

URL = "https://hostwinds.test/cloud/api.php"
API_KEY = "TEST-KEY-do-not-log-1f2e3d"

PLANS: list[dict[str, Any]] = [
    {
        "id": 101,
        "name": "Unmanaged Linux 1 CPU / 2 GB",
        "monthly": "9.99",
        "quarterly": "29.97",
        "semiannually": "56.94",
        "annually": "119.00",
        "biennially": "203.76",
        "triennially": "359.64",
        "promo": {},
        "percent": 0,
        "firsts": [],
        "rid": 52,
        "mtotal": "9.99",
    },
    {
        "id": 102,
        "name": "Unmanaged Linux 2 CPU / 4 GB",
        "monthly": 19.99,
        "quarterly": "-1.00",
        "semiannually": "",
        "annually": "215.89",
        "biennially": "-1",
        "triennially": "0.00",
    },
    {"id": 103, "name": "Absurd", "monthly": "1000000.00", "annually": "99999999.99"},
]


def instance(
    serviceid: int, *, cycle: str = "Monthly", product_id: int = 101, **extra: Any
) -> dict[str, Any]:
    """A Hostwinds instance object as get_instances sends it, secrets included."""
    return {
        "serviceid": serviceid,
        "server_uuid": str(uuid.UUID(int=serviceid)),
        "product_id": product_id,
        "product_name": f"plan {product_id}",
        "billingcycle": cycle,
        "hourly": 0,
        "disk_type": "ssd",
        "status": "ACTIVE",
        "password": "root-pw-NEVER-STORE",
        "configkey": "cfg-NEVER-STORE",
        **extra,
    }


@dataclass
class FakeHostwinds:
    """Answers the Hostwinds protocol from in-memory data; faults per action on request."""

    instances: list[dict[str, Any]] = field(default_factory=list)
    plans: list[dict[str, Any]] = field(default_factory=lambda: list(PLANS))
    cycle_prices: dict[int, dict[str, Any]] = field(default_factory=dict)
    fail: dict[str, Callable[[], httpx.Response]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    forms: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        action = form.get("action", "")
        self.requests[action] += 1
        if form.get("API") != API_KEY:
            return _json([{"result": "error", "action": "Authorization", "message": "Not Authorized!"}])
        if action in self.fail:
            return self.fail[action]()
        if action == "get_instances":
            return _json({"success": self.instances})
        if action == "get_price_list":
            return _json({"success": self.plans})
        if action == "get_billingcycle_prices":
            return _json({"success": self.cycle_prices.get(int(form["serviceid"]), {})})
        return _json([{"result": "error", "action": action, "message": "Invalid Action."}])


def _json(body: Any) -> httpx.Response:
    return httpx.Response(200, text=json.dumps(body))


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
