"""The shipped dashboard and alert rules against a real daemon's /metrics and a migrated database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

import asyncpg
import httpx
import pytest
import pytest_asyncio
import respx
from prometheus_client.parser import text_string_to_metric_families

from cost_sync.settings import Settings
from cost_sync.store.migrate import sql_dir
from tests.integration.conftest import URL, FakeHostwinds, instance, seed
from tests.integration.test_daemon import Running, daemon_settings, scrape, start, wait_for
from tests.monitoring_files import dashboard_sql, queried_metric_names

pytestmark = pytest.mark.db


@pytest_asyncio.fixture
async def mocked(hostwinds: FakeHostwinds) -> AsyncIterator[respx.MockRouter]:
    """respx for Hostwinds only; the admin endpoint on 127.0.0.1 is reached for real."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(URL).mock(side_effect=hostwinds)
        yield mock


def monitored_settings() -> Settings:
    return Settings(admin={"listen": "127.0.0.1:0"}, attribution={"enabled": True})  # type: ignore[arg-type]


async def seed_fleet(hostwinds: FakeHostwinds, pool: asyncpg.Pool) -> None:
    """A fleet with a priced row, an unpriced one, one held change and tenants on the priced row."""
    hostwinds.instances = [instance(1), instance(2, product_id=999), instance(3)]
    hostwinds.cycle_prices[1] = {"monthly": "9.99"}
    await pool.execute((sql_dir() / "fixtures" / "tenants.sql").read_text())
    # Row 3 holds 1.00 and Hostwinds says 9.99: far over [guard] max_change_ratio, so it is held.
    ids = await seed(pool, [("1", "active", None), ("2", "active", "5.00"), ("3", "active", "1.00")])
    # Row 1 has two SMTP IPs: one Acme's, one idle.
    await pool.execute(
        """
        WITH t AS (INSERT INTO tenants (name) VALUES ('Acme') RETURNING id),
             d AS (INSERT INTO domains (tenant_id, domain) SELECT id, 'acme.example' FROM t RETURNING id),
             ip AS (INSERT INTO smtp_ip_addresses (vps_instance_id, ip_address, status)
                    VALUES ($1, '192.0.2.1', 'active'), ($1, '192.0.2.2', 'idle') RETURNING id, status)
        INSERT INTO domain_ip_assignments (domain_id, smtp_ip_address_id)
        SELECT d.id, ip.id FROM d, ip WHERE ip.status = 'active'
        """,
        ids["1"],
    )


async def succeeded(d: Running) -> bool:
    metrics = await scrape(d)
    return (
        sum(
            v
            for (name, labels), v in metrics.items()
            if name == "cost_sync_runs_total" and ("outcome", "succeeded") in labels
        )
        >= 1
    )


async def test_every_metric_the_dashboard_and_alerts_query_is_served(
    hostwinds: FakeHostwinds,
    mocked: respx.MockRouter,
    pool: asyncpg.Pool,
) -> None:
    """After a run, /metrics serves every metric name a dashboard panel or an alert rule selects."""
    await seed_fleet(hostwinds, pool)
    async with start(pool, monitored_settings(), initial_sync=True) as d:

        async def ran() -> bool:
            return await succeeded(d)

        await wait_for(ran, timeout=15)
        text = (await d.http.get("/metrics")).text
    served = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    used = queried_metric_names()
    assert len(used) >= 20
    missing = {name: sorted(where) for name, where in used.items() if name not in served}
    assert not missing, f"queried but not in /metrics: {missing}"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("cost_sync_changes_held", ())] == 1
    assert samples[("cost_sync_changes_held_oldest_age_seconds", ())] >= 0
    assert samples[("cost_sync_max_price_age_seconds", ())] == Settings().sync.max_price_age_seconds
    assert samples[("cost_sync_schedule_interval_seconds", ())] > 0
    assert samples[("cost_sync_runs_failed_consecutive", ())] == 0
    assert samples[("cost_sync_hostwinds_key_refused", ())] == 0


async def test_a_refused_key_and_failures_in_a_row_reach_the_metrics(
    hostwinds: FakeHostwinds,
    mocked: respx.MockRouter,
    pool: asyncpg.Pool,
) -> None:
    """Hostwinds refusing the key fails the run: key_refused 1, failed runs in a row counted."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    hostwinds.fail["get_instances"] = lambda: httpx.Response(
        200, json=[{"result": "error", "action": "Authorization", "message": "Not Authorized!"}]
    )
    async with start(pool, monitored_settings(), initial_sync=True) as d:

        async def failed() -> bool:
            return (await scrape(d)).get(("cost_sync_runs_failed_consecutive", ()), 0) >= 1

        await wait_for(failed, timeout=15)
        metrics = await scrape(d)
    assert metrics[("cost_sync_hostwinds_key_refused", ())] == 1


async def test_progress_of_the_run_in_flight_is_served(
    hostwinds: FakeHostwinds,
    mocked: respx.MockRouter,
    pool: asyncpg.Pool,
) -> None:
    """While a run waits on a cycle-price answer, /metrics says how many services it has to ask."""
    hostwinds.instances = [instance(1), instance(2)]
    await seed(pool, [("1", "active", None), ("2", "active", None)])
    gate, blocked = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        if b"get_billingcycle_prices" in request.content:
            blocked.set()
            await gate.wait()
        return hostwinds(request)

    mocked.post(URL).mock(side_effect=slow)
    async with start(pool, monitored_settings(), initial_sync=True) as d:
        await asyncio.wait_for(blocked.wait(), timeout=10)
        during = await scrape(d)
        gate.set()

        async def ran() -> bool:
            return await succeeded(d)

        await wait_for(ran, timeout=15)
        after = await scrape(d)
    assert during[("cost_sync_run_progress_to_ask", ())] == 2
    assert during[("cost_sync_run_in_progress", ())] == 1
    assert after[("cost_sync_run_progress_to_ask", ())] == 0


async def test_the_dashboards_postgresql_panels_run_on_a_migrated_database(
    hostwinds: FakeHostwinds,
    mocked: respx.MockRouter,
    pool: asyncpg.Pool,
) -> None:
    """Each PostgreSQL panel's SQL runs on cost_sync_tenant_monthly after a run wrote a snapshot."""
    await seed_fleet(hostwinds, pool)
    async with start(pool, monitored_settings(), initial_sync=True):

        async def snapshot() -> bool:
            return await pool.fetchval("SELECT count(*) FROM cost_sync_tenant_costs") >= 1

        await wait_for(snapshot, timeout=15)
    statements = dashboard_sql()
    assert statements
    for sql in statements:
        rows = await pool.fetch(sql)
        assert rows, sql
        assert {"tenant", "monthly USD", "as of"} <= set(rows[0].keys())
        assert all(r["tenant"] for r in rows)
        assert isinstance(rows[0]["as of"], datetime)
    # The panel's total is the view's: every tenant line and the unallocated one, to the cent.
    assert sum(r["monthly USD"] for r in rows) == await pool.fetchval(
        "SELECT sum(total) FROM cost_sync_tenant_monthly"
    )
    # Acme takes half of row 1's 9.99 (which half gets the odd cent follows the IPs' ids); the
    # idle IP's half and rows 2 and 3 (5.00 unpriced, 1.00 with its change held) are unallocated.
    assert [r["tenant"] for r in rows] == ["Acme", "unallocated (idle capacity)"]
    assert rows[0]["monthly USD"] in {Decimal("4.99"), Decimal("5.00")}
    assert rows[0]["monthly USD"] + rows[1]["monthly USD"] == Decimal("15.99")


async def test_a_restarted_daemon_reports_the_ledgers_last_success_before_its_first_run(
    hostwinds: FakeHostwinds,
    mocked: respx.MockRouter,
    pool: asyncpg.Pool,
) -> None:
    """cost_sync_last_success_timestamp_seconds starts at the ledger's last success, not at 0."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    async with start(pool, daemon_settings(), initial_sync=True) as d:

        async def ran() -> bool:
            return await succeeded(d)

        await wait_for(ran, timeout=15)
    finished = await pool.fetchval("SELECT finished FROM cost_sync_runs WHERE outcome = 'succeeded'")
    async with start(pool, daemon_settings(), initial_sync=False) as d:
        metrics = await scrape(d)
    assert metrics[("cost_sync_last_success_timestamp_seconds", ())] == finished.timestamp()


async def test_oldest_observation_age_leaves_out_services_no_row_uses(
    hostwinds: FakeHostwinds, mocked: respx.MockRouter, pool: asyncpg.Pool
) -> None:
    """A cached answer for a service that is gone (its VPS deleted) does not age the metric for ever."""
    hostwinds.instances = [instance(1)]
    await seed(pool, [("1", "active", None)])
    await pool.execute(
        "INSERT INTO cost_sync_price_observations (serviceid, prices, fingerprint, observed, run_id)"
        " VALUES (777, '{}', 'gone', now() - interval '30 days', gen_random_uuid())"
    )
    async with start(pool, daemon_settings(), initial_sync=True) as d:

        async def ran() -> bool:
            return await succeeded(d)

        await wait_for(ran, timeout=15)
        metrics = await scrape(d)
    assert 0 <= metrics[("cost_sync_price_observation_oldest_age_seconds", ())] < 60
