"""The price observation cache and budgeted runs on a real PostgreSQL: what is kept, asked and written."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import respx
from prometheus_client.parser import text_string_to_metric_families

from cost_sync.cli import main as cli
from cost_sync.domain import pricing
from cost_sync.domain.models import Cycle, Observation
from cost_sync.errors import HostwindsTransientError
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once
from cost_sync.settings import Settings
from cost_sync.store import postgres as store_module
from cost_sync.store.postgres import Store
from tests.integration.conftest import API_KEY, URL, FakeHostwinds, instance, lease_held, seed, values
from tests.integration.test_daemon import TOKEN, daemon_settings, start

pytestmark = pytest.mark.db

N = 12


@pytest.fixture
def fleet(hostwinds: FakeHostwinds) -> FakeHostwinds:
    """Twelve monthly instances on plan 101; every service answers its own monthly price."""
    hostwinds.instances = [instance(n) for n in range(1, N + 1)]
    hostwinds.cycle_prices = {n: {"monthly": f"{n}.49", "annually": 100 + n} for n in range(1, N + 1)}
    return hostwinds


@pytest_asyncio.fixture
async def rows(pool: asyncpg.Pool) -> None:
    """Rows naming the twelve instances, never priced."""
    await seed(pool, [(str(n), "active", None) for n in range(1, N + 1)])


def one_worker(**sync: Any) -> Settings:
    """Settings with one Hostwinds worker (a deterministic order of asks)."""
    return Settings(hostwinds={"max_concurrency": 1}, sync=sync)  # type: ignore[arg-type]


@pytest.mark.usefixtures("rows")
async def test_answers_are_cached_exactly_and_a_warm_run_asks_none(
    fleet: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """Each answer is kept as exact text with its fingerprint and run; the next run only reads it."""
    cold = await run_once(client=client, pool=pool, settings=Settings())
    stored = {
        r["serviceid"]: r
        for r in await pool.fetch("SELECT *, prices::text AS p FROM cost_sync_price_observations")
    }
    assert set(stored) == set(range(1, N + 1))
    assert json.loads(stored[7]["p"]) == {"monthly": "7.49", "annually": "107"}
    assert stored[7]["run_id"] == cold.report.run_id
    assert "product_id=101" in stored[7]["fingerprint"]
    fleet.requests.clear()
    warm = await run_once(client=client, pool=pool, settings=Settings())
    assert fleet.requests == {"get_instances": 1, "get_price_list": 1}
    assert warm.report.price_cache.hits == N
    assert warm.report.updated == 0
    ledger = await pool.fetchval("SELECT price_cache FROM cost_sync_runs WHERE id = $1", warm.report.run_id)
    assert json.loads(ledger)["hits"] == N
    assert (await values(pool))["7"] == Decimal("7.49")


@pytest.mark.usefixtures("rows")
async def test_the_price_list_is_cached_without_secrets_and_a_dry_run_keeps_none(
    fleet: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """Each price list a run reads is kept by its options and join key; a cell holding a secret is a
    marker; a dry run keeps nothing."""
    plans = [dict(plan) for plan in fleet.plans]
    plans[0]["quarterly"] = {"rootpass": "hunter2-NEVER-STORE"}
    # Text jsonb cannot hold (NUL, a lone surrogate) and a secret-shaped field in a plan's name.
    plans[1]["name"] = "Plan 2 rootpass=hunter3-NEVER-STORE"
    plans[2]["name"] = "Plan\x00 3 \ud800"
    fleet.plans = plans
    await run_once(client=client, pool=pool, settings=Settings(), request=RunRequest(dry_run=True))
    assert await pool.fetchval("SELECT count(*) FROM cost_sync_price_lists") == 0
    result = await run_once(client=client, pool=pool, settings=Settings())
    (row,) = await pool.fetch("SELECT *, plans::text AS p FROM cost_sync_price_lists")
    assert (row["managed"], row["drive_type"], row["plan_key"]) == (False, "ssd", "id")
    assert row["run_id"] == result.report.run_id
    assert "hunter2" not in row["p"]
    assert "hunter3" not in row["p"]
    cached = store_module.price_list_from_json(row["p"])
    assert cached[101].prices[Cycle.MONTHLY] == "9.99"
    assert cached[101].prices[Cycle.QUARTERLY] == pricing.UNREADABLE_CELL
    assert cached[101].name == "Unmanaged Linux 1 CPU / 2 GB"
    assert cached[102].name == "Plan 2 rootpass=[redacted]"
    assert cached[plans[2]["id"]].name is None


@pytest.mark.usefixtures("rows")
async def test_outage_halfway_writes_nothing_and_next_run_asks_only_the_rest(
    fleet: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """An outage at the seventh service fails the run; six answers stay cached; the next run asks the rest."""
    fleet.service_faults[7] = lambda: httpx.Response(503, text="down")
    before = await values(pool)
    with pytest.raises(HostwindsTransientError):
        await run_once(client=client, pool=pool, settings=one_worker())
    assert await values(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM cost_sync_history") == 0
    kept = {r[0] for r in await pool.fetch("SELECT serviceid FROM cost_sync_price_observations")}
    assert kept == set(range(1, 7))
    del fleet.service_faults[7]
    fleet.asked.clear()
    result = await run_once(client=client, pool=pool, settings=one_worker())
    assert sorted(fleet.asked) == list(range(7, N + 1))
    assert result.report.updated == N


@pytest.mark.usefixtures("rows")
async def test_cancelled_run_keeps_the_answers_it_received(fleet: FakeHostwinds, pool: asyncpg.Pool) -> None:
    """A run cancelled while asking (a shutdown) commits the answers it had and writes no value."""
    answered = asyncio.Event()

    async def slow_after_five(request: httpx.Request) -> httpx.Response:
        answer = fleet(request)
        if len(fleet.asked) == 6:
            answered.set()
            await asyncio.sleep(30)
        return answer

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=slow_after_five)
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
            task = asyncio.create_task(run_once(client=client, pool=pool, settings=one_worker()))
            await asyncio.wait_for(answered.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    kept = {r[0] for r in await pool.fetch("SELECT serviceid FROM cost_sync_price_observations")}
    assert kept == set(range(1, 6))
    assert all(v is None for v in (await values(pool)).values())
    run = await pool.fetchrow("SELECT outcome, error FROM cost_sync_runs")
    assert run["outcome"] == "failed"
    assert "cancelled" in run["error"]


@pytest.mark.usefixtures("rows")
async def test_resync_of_named_instance_asks_afresh_and_applies_the_upgrade(
    fleet: FakeHostwinds, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resync --instance 3` asks service 3 again though its answer is cached; `--once` alone would not."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=fleet)
        assert await asyncio.to_thread(cli.main, ["--once"]) == 0
        # Ops upgraded service 3 at Hostwinds: same fingerprint as far as a quick look goes, a new price.
        fleet.cycle_prices[3] = {"monthly": "29.99"}
        fleet.asked.clear()
        assert await asyncio.to_thread(cli.main, ["--once", "--instance", "3"]) == 0
        assert fleet.asked == []
        capsys.readouterr()
        assert await asyncio.to_thread(cli.main, ["resync", "--instance", "3", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert fleet.asked == [3]
        fleet.asked.clear()
        assert await asyncio.to_thread(cli.main, ["--once", "--full"]) == 0
        assert sorted(fleet.asked) == list(range(1, N + 1))
    assert report["price_cache"]["reasons"]["forced"] == 1
    conn = await asyncpg.connect(db_url)
    try:
        assert (await values(conn))["3"] == Decimal("29.99")
    finally:
        await conn.close()


@pytest.mark.usefixtures("rows")
async def test_budgeted_run_reports_pending_and_once_says_the_next_run_continues(
    fleet: FakeHostwinds, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose budget runs out commits what it priced, keeps the rest's values and says so."""

    async def slow(request: httpx.Request) -> httpx.Response:
        if b"get_billingcycle_prices" in request.content:
            await asyncio.sleep(0.1)
        return fleet(request)

    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_MAX_CONCURRENCY", "1")
    monkeypatch.setenv("COST_SYNC_MAX_RUN_SECONDS", "0.45")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=slow)
        assert await asyncio.to_thread(cli.main, ["--once"]) == 0
        first = capsys.readouterr().out
        assert await asyncio.to_thread(cli.main, ["--once", "--json"]) == 0
        second = json.loads(capsys.readouterr().out)
    assert "pending" in first
    assert "next run continues" in first
    conn = await asyncpg.connect(db_url)
    try:
        runs = await conn.fetch("SELECT price_cache, updated FROM cost_sync_runs ORDER BY started")
    finally:
        await conn.close()
    pending_after_first = json.loads(runs[0]["price_cache"])["pending"]
    assert 0 < pending_after_first < N
    # The rows not reached had no value: they got the price list's provisional estimate.
    assert runs[0]["updated"] == N
    assert second["price_cache"]["hits"] == N - pending_after_first


@pytest.mark.usefixtures("rows")
async def test_daemon_serves_a_resync_between_catch_up_runs(fleet: FakeHostwinds, pool: asyncpg.Pool) -> None:
    """During a budgeted cold sync a resync is served before the fleet is done; catch-up runs finish it."""

    async def slow(request: httpx.Request) -> httpx.Response:
        if b"get_billingcycle_prices" in request.content:
            await asyncio.sleep(0.08)
        return fleet(request)

    settings = daemon_settings(token=TOKEN).model_copy(
        update={
            "hostwinds": Settings().hostwinds.model_copy(update={"max_concurrency": 1}),
            "sync": Settings().sync.model_copy(update={"max_run_seconds": 0.3}),
        }
    )
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(URL).mock(side_effect=slow)
        async with start(pool, settings, initial_sync=True) as running:
            for _ in range(100):
                current = running.daemon.runner.current
                if current is not None and current.progress.asked > 0:
                    break
                await asyncio.sleep(0.02)
            assert current is not None
            shown = (await running.http.get(f"/runs/{current.run_id}")).json()
            assert shown["state"] == "running"
            assert shown["progress"]["to_ask"] == N
            assert shown["progress"]["asked"] >= 1
            answer = await running.http.post(
                "/resync", json={"instances": ["12"]}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert answer.status_code == 202
            run_id = answer.json()["run_id"]
            for _ in range(200):
                record = (await running.http.get(f"/runs/{run_id}")).json()
                if record["state"] in {"succeeded", "failed"}:
                    break
                await asyncio.sleep(0.05)
            assert record["state"] == "succeeded"
            # Rows not reached have provisional values by now: "done" is every service's own answer.
            refined_when_resync_done = await pool.fetchval(
                "SELECT count(*) FROM cost_sync_price_observations"
            )
            for _ in range(200):
                if (
                    all(v is not None for v in (await values(pool)).values())
                    and not running.daemon.runner.busy
                ):
                    break
                await asyncio.sleep(0.05)
            samples = [
                sample
                for family in text_string_to_metric_families((await running.http.get("/metrics")).text)
                for sample in family.samples
            ]
    metrics = {s.name: s for s in samples if s.labels.get("result") in {None, "asked"}}
    stale = sum(
        s.value
        for s in samples
        if s.name == "cost_sync_price_cache_asks_total" and s.labels["reason"] == "stale"
    )
    assert metrics["cost_sync_run_in_progress"].value == 0
    # The resync's answer is cached, so the catch-up runs do not ask service 12 again. A refresh
    # slot that the wall clock happens to cross during the test (service 5's falls at 02:09:50 UTC
    # with the default max age) is a due refresh, not a repeat: it is left out.
    assert metrics["cost_sync_price_cache_services_total"].value - stale == N
    assert 0 <= metrics["cost_sync_price_observation_oldest_age_seconds"].value < 60
    assert (await values(pool))["12"] == Decimal("12.49")
    assert refined_when_resync_done < N
    triggers = [r[0] for r in await pool.fetch("SELECT trigger FROM cost_sync_runs ORDER BY started")]
    assert triggers[:2] == ["startup", "resync"]
    assert "catchup" in triggers[2:]
    assert all(v is not None for v in (await values(pool)).values())


async def test_run_lock_lets_the_blocks_own_errors_through(pool: asyncpg.Pool) -> None:
    """An OSError raised while holding the run lease stays an OSError, and the lease is released."""
    store = Store(pool)
    with pytest.raises(OSError, match="from the run"):
        async with store.lock(timeout=1):
            raise OSError("from the run")
    assert not await lease_held(pool)
    async with store.lock(timeout=0.5):
        assert await lease_held(pool)
        # No session-level lock is left on a connection a pooler could hand to another client.
        held = await pool.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
        assert held == 0
    assert not await lease_held(pool)


@pytest.mark.usefixtures("rows")
async def test_upgrade_and_cycle_change_are_asked_again_and_priced_right(
    fleet: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """A new product_id and a new cycle are asked again and repriced; nothing else is asked."""
    await run_once(client=client, pool=pool, settings=Settings())
    fleet.instances[3] = instance(4, product_id=102)
    fleet.cycle_prices[4] = {"monthly": "19.99"}
    fleet.instances[4] = instance(5, cycle="Annually")
    fleet.asked.clear()
    # An upgrade more than doubles the price: accepted, as `resync --instance` does after an upgrade.
    result = await run_once(
        client=client, pool=pool, settings=Settings(), request=RunRequest(accept_changes=True)
    )
    assert sorted(fleet.asked) == [4, 5]
    assert result.report.price_cache.reasons["changed"] == 2
    prices = await values(pool)
    assert prices["4"] == Decimal("19.99")
    assert prices["5"] == Decimal("8.75")  # 105 a year
    assert result.report.updated == 2
    assert await pool.fetchval(
        "SELECT fingerprint FROM cost_sync_price_observations WHERE serviceid = 4"
    ) == (
        "product_id=102;billingcycle=Monthly;hourly=0;disk_type=ssd;managed=0;"
        "server_uuid=00000000-0000-0000-0000-000000000004"
    )


@pytest.mark.usefixtures("rows")
async def test_short_max_age_refetches_every_service(
    fleet: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """With a max age shorter than the time since the last answers, every service is asked again."""
    await run_once(client=client, pool=pool, settings=Settings())
    await pool.execute("UPDATE cost_sync_price_observations SET observed = observed - interval '2 minutes'")
    fleet.asked.clear()
    short = Settings(sync={"max_price_age_seconds": 60})  # type: ignore[arg-type]
    result = await run_once(client=client, pool=pool, settings=short)
    assert sorted(fleet.asked) == list(range(1, N + 1))
    assert result.report.price_cache.reasons["stale"] == N


@pytest.mark.usefixtures("rows")
async def test_error_answer_for_one_service_prices_that_row_from_the_price_list(
    fleet: FakeHostwinds, client: HostwindsClient, pool: asyncpg.Pool
) -> None:
    """An error envelope for service 5's cycle prices: row 5 is priced from the price list with the
    fallback recorded in its history, the others from their own prices; nothing cached for 5."""
    fleet.service_faults[5] = lambda: httpx.Response(
        200, json=[{"result": "error", "action": "get_billingcycle_prices", "message": "No such service"}]
    )
    result = await run_once(client=client, pool=pool, settings=Settings())
    assert result.report.unpriced_by_reason == {}
    prices = await values(pool)
    assert prices["5"] is not None
    assert sum(v is not None for v in prices.values()) == N
    assert (
        await pool.fetchval("SELECT fallback FROM cost_sync_history WHERE hostwinds_instance_id = '5'")
        == "cycle_prices_error"
    )
    assert await pool.fetchval("SELECT count(*) FROM cost_sync_price_observations WHERE serviceid = 5") == 0


async def test_observations_read_in_chunks_share_repeated_answers(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read across several chunks, every observation comes back; identical answers share one read-only map."""
    monkeypatch.setattr(store_module, "_OBSERVATION_CHUNK", 3)
    run_id = uuid.uuid4()
    now = datetime.now(UTC)
    answers = [{Cycle.MONTHLY: "9.99"}, {Cycle.MONTHLY: "4.99", Cycle.ANNUALLY: "50.00"}]
    store = Store(pool)
    await store.save_observations(
        [Observation(n, answers[n % 2], f"fp{n % 2}", now, run_id) for n in range(1, 8)]
    )
    read = await store.read_observations(list(range(1, 9)))
    assert sorted(read) == list(range(1, 8))
    assert {n: dict(o.prices) for n, o in read.items()} == {n: answers[n % 2] for n in range(1, 8)}
    assert read[1].prices is read[7].prices
    assert read[2].prices is not read[1].prices
    with pytest.raises(TypeError):
        read[1].prices[Cycle.MONTHLY] = "0.01"  # type: ignore[index]
