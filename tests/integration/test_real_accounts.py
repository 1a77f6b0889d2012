"""Real accounts are messier: odd answers shrink to the rows they concern, against the sandbox and
a real PostgreSQL (the sandbox's ``openapi`` price-list shape, error envelopes in both forms)."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from cost_sync.hostwinds import HostwindsClient
from cost_sync.sandbox import CUSTOM_PLAN_ID, Fleet, SandboxServer, load_demo_fleet
from cost_sync.settings import Settings, load_settings
from cost_sync.sync import RunResult, run_once
from tests.integration.conftest import seed, values

pytestmark = pytest.mark.db

ALIASES = json.dumps({"Bi-Annually": "semiannually"})
CUSTOM_SERVICE = 1234590


def environ(url: str, db_url: str, key: str, **extra: str) -> dict[str, str]:
    """cost-sync's environment for a run against ``url``."""
    return {
        "COST_SYNC_DATABASE_URL": db_url,
        "COST_SYNC_HOSTWINDS_URL": url,
        "COST_SYNC_HOSTWINDS_API_KEY": key,
        "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
        "COST_SYNC_HOSTWINDS_CYCLE_ALIASES": ALIASES,
        **extra,
    }


def openapi_fleet(**changes: Any) -> Fleet:
    """The demo fleet in the OpenAPI price-list shape, plus one instance on the custom plan."""
    fleet = load_demo_fleet()
    custom = {
        **fleet.instances[0],
        "serviceid": CUSTOM_SERVICE,
        "server_uuid": "00000000-0000-4000-8000-000000000060",
        "product_id": CUSTOM_PLAN_ID,
        "product_name": "Custom VPS (sandbox)",
        "billingcycle": "Monthly",
    }
    return dataclasses.replace(
        fleet, instances=[*fleet.instances, custom], price_list_shape="openapi", **changes
    )


def rows(fleet: Fleet) -> list[tuple[str | None, str, str | None]]:
    """One active row per fleet instance, named by its serviceid."""
    return [(str(i["serviceid"]), "active", None) for i in fleet.instances]


async def sync(server: SandboxServer, db_url: str, settings: Settings, **kwargs: Any) -> RunResult:
    """One run against the sandbox, on a pool of the test database."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, server.fleet.api_key, url=server.url, requests_per_second=None)
            return await run_once(client=client, pool=pool, settings=settings, **kwargs)
    finally:
        await pool.close()


def reasons(result: RunResult) -> dict[str, str]:
    """hostwinds_instance_id -> unpriced reason (or the price source) of every row."""
    return {
        str(o.row.hostwinds_instance_id): getattr(o.result, "reason", None) or o.result.source  # type: ignore[union-attr]
        for o in result.outcomes
    }


async def expected_values(db_url: str) -> dict[str, Decimal | None]:
    """What the demo fleet in its flat shape stores, with the same settings."""
    async with SandboxServer(load_demo_fleet()) as flat:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(flat.fleet))
        await conn.close()
        await sync(flat, db_url, load_settings(environ=environ(flat.url, db_url, flat.fleet.api_key)))
        conn = await asyncpg.connect(db_url)
        try:
            return await values(conn)
        finally:
            await conn.close()


@pytest.mark.parametrize("plan_key", ["id", "rid"])
async def test_a_custom_plan_row_next_to_ordinary_rows_prices_every_ordinary_row(
    databases: Any, migrated_template: str, plan_key: str
) -> None:
    """The OpenAPI-shaped list with a custom plan: every ordinary row priced as from the flat list,
    the custom one unpriced ``custom_plan`` and named as ``price_list_row_unreadable``."""
    expected = await expected_values(await databases.create(template=migrated_template))
    fleet = openapi_fleet(cycle_prices={}, cycle_prices_shape="empty")
    if plan_key == "rid":
        rid = {(p["id"], p.get("drive_type", "ssd"), p.get("managed", False)): p["rid"] for p in fleet.plans}
        fleet = dataclasses.replace(
            fleet,
            instances=[
                {**i, "product_id": rid.get((int(i["product_id"]), i.get("disk_type", "ssd"), False), 960)}
                for i in fleet.instances
            ],
        )
    db_url = await databases.create(template=migrated_template)
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(server.fleet))
        await conn.close()
        env = environ(server.url, db_url, server.fleet.api_key, COST_SYNC_HOSTWINDS_PLAN_KEY=plan_key)
        result = await sync(server, db_url, load_settings(environ=env))

    conn = await asyncpg.connect(db_url)
    try:
        got = await values(conn)
    finally:
        await conn.close()
    assert result.report.outcome == "succeeded"
    assert reasons(result)[str(CUSTOM_SERVICE)] == "custom_plan"
    assert got.pop(str(CUSTOM_SERVICE)) is None
    # Those the demo prices from their own cycle prices come from the list here ({} answers).
    own = {"1234574", "1234575"}
    assert {k: v for k, v in got.items() if k not in own} == {
        k: v for k, v in expected.items() if k not in own
    }
    assert all(got[k] is not None for k in own)
    [finding] = [
        w
        for w in result.report.warnings
        if w.startswith("price_list_row_unreadable: price list managed=0 drive_type=ssd:")
    ]
    assert f"custom plan {CUSTOM_PLAN_ID if plan_key == 'id' else CUSTOM_PLAN_ID + 900} at answer." in finding
    assert ".pricing" in finding
    # The resource options inside `pricing` never became plans.
    assert not set(result.report.plans_in_use or []) & {1, 2, 3, 4, 11, 12, 21, 22, 31, 41}
