"""Numbers and objects Hostwinds should not send, on real PostgreSQL, each concerning its row only:
a 5,000-digit integer, a price with 20,000 trailing zeros, duplicate keys, an HTML page for one
service (issue 18, defects 1, 2 and the duplicate-key and HTML risks)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from decimal import Decimal

import asyncpg
import httpx
import pytest
from structlog.testing import capture_logs

from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import Fleet, SandboxServer
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once
from cost_sync.settings import Settings
from tests.integration.conftest import PLANS, FakeHostwinds, instance, seed, values

KEY = "numbers-test-key-1a2b3c"

pytestmark = pytest.mark.db

HUGE_INT = "1" + "0" * 4999
TRAILING_ZEROS = "9.99" + "0" * 20_000
NOT_SHORT = "9.99" + "0" * 20_000 + "1"


def text(body: str) -> httpx.Response:
    return httpx.Response(200, text=body)


def prices(monthly_json: str) -> httpx.Response:
    """A get_billingcycle_prices answer whose monthly price is this JSON text, verbatim."""
    return text('{"success": {"monthly": ' + monthly_json + "}}")


def instances_body(items: list[str]) -> httpx.Response:
    return text('{"success": [' + ", ".join(items) + "]}")


async def test_odd_numbers_and_objects_concern_their_row_only(
    hostwinds: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """Every service answers something odd but one; the run succeeds, twice (the second from the
    cache), every odd row keeps its value with its reason or falls back to the price list, and the
    plain one is priced."""
    plain = [json.dumps(instance(sid)) for sid in (1, 2, 3, 4, 5, 6)]
    # Service 7 names product_id twice, differently; service 8 names serviceid twice, differently.
    seven = json.dumps(instance(7))[:-1] + ', "product_id": 102}'
    eight = json.dumps(instance(8))[:-1] + ', "serviceid": 9}'
    hostwinds.fail["get_instances"] = lambda: instances_body([*plain, seven, eight])
    hostwinds.cycle_prices = {1: {"monthly": "9.99"}}
    hostwinds.service_faults = {
        2: lambda: prices(HUGE_INT),
        3: lambda: prices(TRAILING_ZEROS),
        4: lambda: text('{"success": {"monthly": "1.00", "monthly": "999.00"}}'),
        5: lambda: text("<html><body>502 Bad Gateway</body></html>"),
        6: lambda: prices(NOT_SHORT),
    }
    ids = [str(sid) for sid in range(1, 10)]
    await seed(pool, [(sid, "active", "9.00") for sid in ids])

    with capture_logs() as logs:
        first = await run_once(client=client, pool=pool, settings=Settings(), request=RunRequest(full=True))
        second = await run_once(client=client, pool=pool, settings=Settings())
    assert first.report.outcome == second.report.outcome == "succeeded"
    # 4 (duplicate key) and 5 (HTML) are unreadable answers: priced from the price list instead.
    assert first.report.unpriced_by_reason == {
        "duplicate_instance": 1,  # 7
        "invalid_price": 2,  # 2 (5,000 digits) and 6 (too long to keep exactly)
        "not_found": 2,  # 8 and 9: an instance naming two serviceids names none
    }
    # The second run reads 2, 3 and 6 from the cache and asks the services that failed again.
    assert second.report.unpriced_by_reason == first.report.unpriced_by_reason
    assert second.report.price_cache.hits == 4
    stored = await values(pool)
    assert stored == {
        "1": Decimal("9.99"),
        "3": Decimal("9.99"),
        "4": Decimal("9.99"),
        "5": Decimal("9.99"),
        **{sid: Decimal("9.00") for sid in ("2", "6", "7", "8", "9")},
    }
    # The 5,000-digit integer is read once (not retried as "not JSON"); the HTML page is retried.
    assert hostwinds.asked.count(2) == 1
    assert hostwinds.asked.count(5) == 4 * 2
    cached = await pool.fetchval("SELECT prices::text FROM cost_sync_price_observations WHERE serviceid = 3")
    assert '"9.99"' in cached
    longest = await pool.fetchval("SELECT max(length(prices::text)) FROM cost_sync_price_observations")
    assert longest < 200
    history = await pool.fetchval(
        "SELECT cycle_price FROM cost_sync_history WHERE hostwinds_instance_id = '3'"
    )
    assert history == Decimal("9.99")
    fallbacks = dict(
        await pool.fetch(
            "SELECT DISTINCT hostwinds_instance_id, fallback FROM cost_sync_history"
            " WHERE hostwinds_instance_id IN ('4', '5')"
        )
    )
    assert fallbacks == {"4": "cycle_prices_unreadable", "5": "cycle_prices_unreadable"}
    reasons = {e["serviceid"]: e["reason"] for e in logs if e["event"] == "sync.cycle_prices_unavailable"}
    assert "monthly twice with different values" in reasons[4]
    assert "not JSON" in reasons[5]


async def test_forced_runs_with_distinct_large_cells_keep_memory_flat(pool: asyncpg.Pool) -> None:
    """Defect 15 as found, through the sandbox: forced runs, each service answering a distinct
    100 KB numeric cell every run. After the first runs, memory stops growing."""
    sids = list(range(1, 21))

    def fleet(run: int) -> Fleet:
        # Distinct per run and service; half normalise to a short price, half are too long to keep.
        cells = {
            sid: {"monthly": f"9.{run:03d}{sid:03d}" + "0" * 100_000 + ("1" if sid % 2 else "")}
            for sid in sids
        }
        return Fleet(api_key=KEY, instances=[instance(sid) for sid in sids], plans=PLANS, cycle_prices=cells)

    await seed(pool, [(str(sid), "active", "9.00") for sid in sids])
    settings = Settings()
    sizes = []
    async with SandboxServer(fleet(0)) as sandbox, httpx.AsyncClient() as http:
        client = HostwindsClient(http, KEY, url=sandbox.url, requests_per_second=None)
        tracemalloc.start()
        try:
            for run in range(8):
                sandbox.fleet = fleet(run)
                result = await run_once(
                    client=client, pool=pool, settings=settings, request=RunRequest(full=True)
                )
                assert result.report.outcome == "succeeded"
                gc.collect()
                sizes.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
    # 6 runs x 20 services x 100 KB = 12 MB if each cell were kept anywhere.
    assert sizes[-1] - sizes[1] < 3 * 1024 * 1024, sizes
    assert result.report.unpriced_by_reason == {"invalid_price": 10}
