"""The run itself on the in-memory store: what it asks Hostwinds, what it keeps, what it writes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from cost_sync.domain.models import Estimate
from cost_sync.errors import HostwindsAuthError, HostwindsTransientError, MissingSchemaError, RunStalled
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import Progress, RunResult, SyncRun
from cost_sync.settings import Settings
from cost_sync.store.memory import MemoryStore
from tests.fakes import API_KEY, PLANS, URL, FakeHostwinds, instance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def envelope(message: str) -> Callable[[], httpx.Response]:
    """An HTTP-200 error envelope with this message."""
    return lambda: httpx.Response(200, json=[{"result": "error", "action": "x", "message": message}])


@pytest.fixture
def hostwinds() -> FakeHostwinds:
    """Ten monthly instances on plan 101 (9.99); service 3 has its own 7.49."""
    fake = FakeHostwinds()
    fake.instances = [instance(n) for n in range(1, 11)]
    fake.cycle_prices = {3: {"monthly": "7.49"}}
    return fake


def settings(**sync: Any) -> Settings:
    """Settings with one worker (a deterministic order of asks) and these [sync] values."""
    return Settings(hostwinds={"max_concurrency": 1}, sync=sync)  # type: ignore[arg-type]


async def run(
    client: HostwindsClient,
    store: MemoryStore,
    *,
    at: datetime = T0,
    config: Settings | None = None,
    clock: Callable[[], float] | None = None,
    **options: Any,
) -> RunResult:
    """One run at wall-clock time ``at``; ``options`` are the RunRequest's."""
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    return await SyncRun(
        client=client,
        store=store,
        settings=config or settings(),
        now=lambda: at,
        request=RunRequest(**options),
        **extra,
    ).execute()


async def test_warm_run_asks_no_per_service_price(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """An hour later every row is priced from the cache: only the instance and price lists are asked."""
    cold = await run(client, store)
    assert cold.report.price_cache.asked == 10
    assert cold.report.price_cache.reasons["new"] == 10
    hostwinds.requests.clear()
    warm = await run(client, store, at=T0 + timedelta(hours=1))
    assert hostwinds.requests == {"get_instances": 1, "get_price_list": 1}
    assert warm.report.price_cache.hits == 10
    assert warm.report.price_cache.asked == 0
    assert warm.report.updated == 0
    assert store.value("3") == Decimal("7.49")
    assert warm.report.priced_by_source == {"cycle_prices": 1, "price_list": 9}


async def test_upgrade_and_cycle_change_are_asked_again_nothing_else(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """A new product_id and a new billing cycle change the fingerprint: those two are asked and repriced."""
    await run(client, store)
    hostwinds.asked.clear()
    hostwinds.instances[3] = instance(4, product_id=102)  # upgraded to the 19.99 plan
    hostwinds.instances[4] = instance(5, cycle="Quarterly")
    hostwinds.cycle_prices[4] = {"monthly": "19.99"}
    hostwinds.cycle_prices[5] = {"monthly": "9.99", "quarterly": "26.97"}
    # Doubling a price is over max_change_ratio: accepted here, as `resync --instance` does.
    result = await run(client, store, at=T0 + timedelta(minutes=5), accept_changes=True)
    assert sorted(hostwinds.asked) == [4, 5]
    assert result.report.price_cache.reasons == {"new": 0, "changed": 2, "stale": 0, "forced": 0}
    assert store.value("4") == Decimal("19.99")
    assert store.value("5") == Decimal("8.99")
    assert result.report.updated == 2


async def test_short_max_age_refetches_everything(client: HostwindsClient, store: MemoryStore) -> None:
    """Once the max age has passed, every observation is stale and asked again."""
    await run(client, store, config=settings(max_price_age_seconds=60))
    result = await run(
        client, store, at=T0 + timedelta(seconds=61), config=settings(max_price_age_seconds=60)
    )
    assert result.report.price_cache.reasons["stale"] == 10
    assert result.report.price_cache.hits == 0


async def test_full_asks_every_service_afresh(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """--full asks every matched service although each has a fresh observation."""
    await run(client, store)
    hostwinds.asked.clear()
    result = await run(client, store, at=T0 + timedelta(minutes=1), full=True)
    assert sorted(hostwinds.asked) == list(range(1, 11))
    assert result.report.price_cache.reasons["forced"] == 10


async def test_error_answer_for_one_service_falls_back_to_the_price_list(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """An error envelope for service 6's cycle prices: row 6 priced from the price list with the
    fallback named, the others as usual; nothing cached for service 6."""
    hostwinds.service_faults[6] = envelope("A valid serviceid is required.")
    with capture_logs() as logs:
        result = await run(client, store)
    assert result.report.unpriced_by_reason == {}
    assert result.report.price_cache.failed == 1
    assert store.value("6") == Decimal("9.99")
    [six] = [o.result for o in result.outcomes if o.row.hostwinds_instance_id == "6"]
    assert isinstance(six, Estimate)
    assert (six.source.value, six.fallback) == ("price_list", "cycle_prices_error")
    assert 6 not in store.observations
    warned = [e for e in logs if e["event"] == "sync.cycle_prices_unavailable"]
    assert warned[0]["serviceid"] == 6
    assert warned[0]["fallback"] == "cycle_prices_error"
    assert "valid serviceid" in warned[0]["reason"]
    assert not any("cycle_prices_unavailable_everywhere" in w for w in result.report.warnings)


@pytest.mark.parametrize(
    ("answer", "fallback"),
    [
        (lambda: httpx.Response(200, json={"success": ["not", "cycles"]}), "cycle_prices_unreadable"),
        (lambda: httpx.Response(200, json={}), "cycle_prices_empty"),
        (lambda: httpx.Response(200, json={"success": {"annually": "99.00"}}), "cycle_missing"),
        (
            lambda: httpx.Response(
                400, json={"result": "error", "action": "x", "message": "Invalid Action."}
            ),
            "cycle_prices_error",
        ),
    ],
    ids=["unreadable", "empty", "cycle-missing", "object-envelope-400"],
)
async def test_each_unusable_cycle_price_answer_falls_back_with_its_reason(
    hostwinds: FakeHostwinds,
    client: HostwindsClient,
    store: MemoryStore,
    answer: Callable[[], httpx.Response],
    fallback: str,
) -> None:
    """{}, an unreadable body, no price for the cycle, an error object at HTTP 400: priced from the list."""
    hostwinds.service_faults[2] = answer
    result = await run(client, store)
    [two] = [o.result for o in result.outcomes if o.row.hostwinds_instance_id == "2"]
    assert isinstance(two, Estimate)
    assert (two.monthly, two.source.value, two.fallback) == (Decimal("9.99"), "price_list", fallback)
    assert result.report.outcome == "succeeded"


async def test_an_error_answer_and_no_plan_leave_the_row_unpriced(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """With neither source the row is unpriced cycle_prices_unavailable, naming both causes."""
    hostwinds.instances[1] = instance(2, product_id=999)
    hostwinds.service_faults[2] = envelope("Invalid Action.")
    result = await run(client, store)
    [two] = [o.result for o in result.outcomes if o.row.hostwinds_instance_id == "2"]
    assert not isinstance(two, Estimate)
    assert two.reason.value == "cycle_prices_unavailable"
    assert "Invalid Action." in two.detail
    assert "no price-list plan 999" in two.detail


async def test_every_service_failing_the_same_way_is_one_warning_and_prices_from_the_list(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """All ten services answer the same error: the run warns once and every row has a list price."""
    for sid in range(1, 11):
        hostwinds.service_faults[sid] = envelope("A valid serviceid is required.")
    result = await run(client, store)
    assert result.report.priced_by_source == {"price_list": 10}
    [warning] = [w for w in result.report.warnings if w.startswith("cycle_prices_unavailable_everywhere")]
    assert "all 10 service(s) asked" in warning
    assert "A valid serviceid is required." in warning
    assert "fallback cycle_prices_error" in warning


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (envelope("Not Authorized!"), HostwindsAuthError),
        (lambda: httpx.Response(503, text="busy"), HostwindsTransientError),
    ],
    ids=["auth", "outage"],
)
async def test_key_refused_or_outage_on_cycle_prices_fails_the_run_with_its_cause(
    hostwinds: FakeHostwinds,
    client: HostwindsClient,
    store: MemoryStore,
    fault: Callable[[], httpx.Response],
    error: type[Exception],
) -> None:
    """A refused key or an outage on cycle prices fails the run with that error, not an ExceptionGroup."""
    hostwinds.service_faults[1] = fault
    with capture_logs() as logs, pytest.raises(error):
        await run(client, store)
    assert all(row.approximate_cost is None for row in store.rows.values())
    [failed] = store.runs
    assert failed.outcome == "failed"
    assert "ExceptionGroup" not in (failed.error or "")
    # Said once, by whoever ran it (the command line's error line, the daemon's sync.failed).
    assert not [e for e in logs if e["event"] == "sync.failed"]


async def test_outage_halfway_keeps_answers_and_next_run_asks_only_the_rest(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """An outage at service 6 fails the run, writes nothing; the next run asks only what was not answered."""
    hostwinds.service_faults[6] = lambda: httpx.Response(503, text="busy")
    with pytest.raises(HostwindsTransientError):
        await run(client, store)
    answered = set(store.observations)
    assert answered == {1, 2, 3, 4, 5}
    assert all(row.approximate_cost is None for row in store.rows.values())
    del hostwinds.service_faults[6]
    hostwinds.asked.clear()
    result = await run(client, store, at=T0 + timedelta(minutes=2))
    assert sorted(hostwinds.asked) == sorted(set(range(1, 11)) - answered)
    assert result.report.updated == 10


async def test_failed_price_list_stops_the_per_service_fetch(
    hostwinds: FakeHostwinds, store: MemoryStore
) -> None:
    """When the price list fails, no per-service request starts after the failure."""
    gate = asyncio.Event()
    plain = hostwinds

    async def slow_price_list_then_fail(request: httpx.Request) -> httpx.Response:
        answer = plain(request)
        if b"get_price_list" in request.content:
            await gate.wait()
            return envelope("Not Authorized!")()
        if b"get_billingcycle_prices" in request.content and len(plain.asked) == 3:
            gate.set()
        await asyncio.sleep(0)
        return answer

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=slow_price_list_then_fail)
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, API_KEY, url=URL, requests_per_second=None)
            with pytest.raises(HostwindsAuthError):
                await run(client, store)
        asked_at_failure = len(plain.asked)
        await asyncio.sleep(0.05)
    assert len(plain.asked) == asked_at_failure
    assert asked_at_failure < 10


async def test_budget_leaves_pending_rows_provisional_and_the_next_run_refines_them(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """A budget of four asks commits those, gives the six rows with no value the price list's
    provisional estimate at once, and the next run asks them and refines them."""
    hostwinds.cycle_prices[9] = {"monthly": "8.49"}  # its own price differs from the list's 9.99
    ticks = itertools.count()
    # The clock reads once at the start and once before each ask: asks 1-4 start before 4.5 s.
    first = await run(client, store, config=settings(max_run_seconds=4.5), clock=lambda: float(next(ticks)))
    assert first.report.price_cache.pending == 6
    assert first.report.unpriced_by_reason == {}
    assert first.report.provisional == 6
    assert first.report.updated == 10
    provisional = {
        o.row.hostwinds_instance_id for o in first.outcomes if getattr(o.result, "provisional", False)
    }
    assert provisional == {"5", "6", "7", "8", "9", "10"}
    assert store.value("9") == Decimal("9.99")
    second = await run(client, store, at=T0 + timedelta(minutes=1))
    assert second.report.price_cache.reasons["new"] == 6
    assert second.report.price_cache.hits == 4
    assert second.report.price_cache.pending == 0
    assert second.report.provisional == 0
    assert store.value("9") == Decimal("8.49")  # refined: a change like any other, within the guard
    assert second.report.updated == 1


async def test_pending_row_keeps_its_value(hostwinds: FakeHostwinds, client: HostwindsClient) -> None:
    """A row not reached within the budget keeps its stored value, even when a price list would price it."""
    store = MemoryStore()
    store.add_row("1")
    store.add_row("2", cost="5.00")
    # The clock reads 0 at the start, then 1 before the first ask (made) and 2 before the second.
    result = await run(client, store, config=settings(max_run_seconds=1.5), clock=itertools.count().__next__)
    assert result.report.price_cache.pending == 1
    assert store.value("2") == Decimal("5.00")


async def test_a_budget_spent_before_the_first_ask_fails_the_run(
    hostwinds: FakeHostwinds, client: HostwindsClient
) -> None:
    """No service could be asked: the run fails saying so and writes nothing (the next would stop alike)."""
    store = MemoryStore()
    store.add_row("1", cost="5.00")
    with pytest.raises(RunStalled, match=r"no progress: .*sync.max_run_seconds = 0.5 s.* 1 services"):
        await run(client, store, config=settings(max_run_seconds=0.5), clock=itertools.count().__next__)
    assert store.value("1") == Decimal("5.00")
    assert [r.outcome for r in store.runs] == ["failed"]


async def test_dry_run_keeps_no_observation(client: HostwindsClient, store: MemoryStore) -> None:
    """A dry run asks and prices but writes nothing, the cache included."""
    result = await run(client, store, dry_run=True)
    assert result.report.changed == 10
    assert store.observations == {}
    assert store.runs == []


async def test_observations_are_saved_in_batches_and_hold_no_secret(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """A cell that is not a number (an object with a password) is cached as a marker, still invalid."""
    hostwinds.cycle_prices[7] = {"monthly": {"rootpass": "hunter2-NEVER"}}
    first = await run(client, store)
    assert "hunter2" not in repr(store.observations)
    assert first.report.unpriced_by_reason == {"invalid_price": 1}
    second = await run(client, store, at=T0 + timedelta(minutes=1))
    assert second.report.unpriced_by_reason == {"invalid_price": 1}
    assert [o.result for o in first.outcomes] == [o.result for o in second.outcomes]


async def test_plan_names_are_counted_and_a_disagreement_is_logged_but_priced(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """Names that agree and names that do not are counted; a disagreeing row is still priced."""
    for item in hostwinds.instances:
        item["product_name"] = "  unmanaged LINUX 1 CPU / 2 GB "
    hostwinds.instances[0]["product_name"] = "Something Else"
    with capture_logs() as logs:
        result = await run(client, store)
    assert result.report.plan_names == {"agree": 9, "disagree": 1}
    assert store.value("1") == Decimal("9.99")
    warned = [e for e in logs if e["event"] == "sync.plan_name_disagrees"]
    assert [(e["product_id"], e["product_name"], e["plan_key"]) for e in warned] == [
        (101, "Something Else", "id")
    ]


async def test_plan_key_rid_joins_product_ids_that_are_rids(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """A fleet whose product_ids are rids is unpriced by id and priced right with plan_key = "rid"."""
    for item in hostwinds.instances:
        item["product_id"] = 52  # plan 101's rid
        item["product_name"] = "Unmanaged Linux 1 CPU / 2 GB"
    by_id = await run(client, store, config=Settings(hostwinds={"max_concurrency": 1}))  # type: ignore[arg-type]
    assert by_id.report.unpriced_by_reason == {"plan_not_found": 9}
    by_rid = await run(
        client,
        store,
        at=T0 + DAY,
        config=Settings(hostwinds={"max_concurrency": 1, "plan_key": "rid"}),  # type: ignore[arg-type]
        full=True,
    )
    assert by_rid.report.unpriced_by_reason == {}
    assert by_rid.report.plan_names == {"agree": 10, "disagree": 0}
    assert [store.value(str(n)) for n in (1, 2, 3)] == [Decimal("9.99"), Decimal("9.99"), Decimal("7.49")]


async def test_a_cycle_alias_from_settings_prices_bi_annually(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """Bi-Annually is unknown_cycle without an alias and the semiannual price with one."""
    hostwinds.instances[0]["billingcycle"] = "Bi-Annually"
    plain = await run(client, store)
    assert plain.report.unpriced_by_reason == {"unknown_cycle": 1}
    aliased = await run(
        client,
        store,
        at=T0 + DAY,
        config=Settings(
            hostwinds={"max_concurrency": 1, "cycle_aliases": {"Bi-Annually": "semiannually"}}  # type: ignore[arg-type]
        ),
    )
    assert aliased.report.unpriced_by_reason == {}
    assert store.value("1") == Decimal("9.49")  # 56.94 / 6
    outcome = next(o for o in aliased.outcomes if o.row.hostwinds_instance_id == "1")
    assert isinstance(outcome.result, Estimate)
    assert outcome.result.cycle_alias == "Bi-Annually"


async def test_a_grouped_price_list_prices_the_fleet_right(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """Plans nested under fixed and custom groups price exactly as the same plans in a flat list."""
    hostwinds.instances[4]["product_id"] = 301
    hostwinds.instances[4]["billingcycle"] = "Annually"
    grouped = {
        "success": {
            "fixed": [dict(PLANS[0])],
            "custom": {"301": {"id": 301, "name": "Custom", "monthly": "30.00", "annually": "300.00"}},
        }
    }
    hostwinds.fail["get_price_list"] = lambda: httpx.Response(200, json=grouped)
    result = await run(client, store)
    assert result.report.unpriced_by_reason == {}
    assert store.value("1") == Decimal("9.99")
    assert store.value("3") == Decimal("7.49")
    assert store.value("5") == Decimal("25.00")  # 300.00 / 12


def test_progress_is_logged_at_most_every_ten_seconds() -> None:
    """Off a terminal, a thousand quick answers make one progress line, plus one when all are asked."""
    progress = Progress(to_ask=1000, started=0.0)
    with capture_logs() as logs:
        for _ in range(1000):
            progress.tick()
    lines = [e for e in logs if e["event"] == "sync.progress"]
    assert [e["asked"] for e in lines] == [1, 1000]


def test_progress_listener_replaces_the_log() -> None:
    """With a listener (the terminal bar), every answer reaches it and nothing is logged."""
    seen: list[int] = []
    progress = Progress(to_ask=3, listener=lambda p: seen.append(p.asked))
    with capture_logs() as logs:
        for _ in range(3):
            progress.tick()
    assert seen == [1, 2, 3]
    assert logs == []


async def test_attribution_snapshot_follows_each_committed_run_when_enabled(
    client: HostwindsClient, store: MemoryStore
) -> None:
    """Enabled: a committed run is followed by one snapshot under its id; a dry run or disabled: none."""
    enabled = Settings(hostwinds={"max_concurrency": 1}, attribution={"enabled": True})  # type: ignore[arg-type]
    await run(client, store)
    await run(client, store, config=enabled, dry_run=True)
    assert store.attributions == []
    result = await run(client, store, config=enabled)
    assert store.attributions == [result.report.run_id]
    assert result.attribution_error is None


async def test_failed_snapshot_leaves_the_committed_run_succeeded(
    client: HostwindsClient, store: MemoryStore
) -> None:
    """A snapshot that fails is logged and handed back; the run's prices and ledger row stand."""
    store.attribution_fault = MissingSchemaError("tenant attribution needs: table smtp_ip_addresses")
    enabled = Settings(hostwinds={"max_concurrency": 1}, attribution={"enabled": True})  # type: ignore[arg-type]
    with capture_logs() as logs:
        result = await run(client, store, config=enabled)
    assert result.attribution_error is store.attribution_fault
    assert [r.outcome for r in store.runs] == ["succeeded"]
    assert store.value("3") == Decimal("7.49")
    assert [e["error"] for e in logs if e["event"] == "attribution.failed"] == [str(store.attribution_fault)]
    assert not [e for e in logs if e["event"] == "sync.failed"]


def test_a_run_keeps_one_object_per_distinct_answer_and_fingerprint() -> None:
    """Equal answers and fingerprints share one read-only object, up to the limit; values are unchanged."""
    from cost_sync.domain.models import Cycle
    from cost_sync.run.sync import _Shared

    shared = _Shared()
    first = shared.prices({Cycle.MONTHLY: "9.99", Cycle.ANNUALLY: "{'rootpass': 'x'}"})
    again = shared.prices({Cycle.MONTHLY: "9.99", Cycle.ANNUALLY: "{'rootpass': 'x'}"})
    assert first is again
    assert dict(first) == {Cycle.MONTHLY: "9.99", Cycle.ANNUALLY: "[not a number]"}
    with pytest.raises(TypeError):
        first[Cycle.MONTHLY] = "0.01"  # type: ignore[index]
    text = "product_id=101;billingcycle=Monthly"
    assert shared.text("".join(text)) is shared.text("".join(text))
    shared.LIMIT = 1
    assert shared.prices({Cycle.MONTHLY: "1.00"}) == {Cycle.MONTHLY: "1.00"}
    assert shared.prices({Cycle.MONTHLY: "1.00"}) is not shared.prices({Cycle.MONTHLY: "1.00"})


def rated(**sync: Any) -> Settings:
    """Settings at 2 requests/s (the polite default), one worker, and these [sync] values."""
    return Settings(hostwinds={"max_concurrency": 1, "requests_per_second": 2}, sync=sync)  # type: ignore[arg-type]


async def test_a_cold_start_commits_provisional_estimates_within_seconds_then_refines(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """30 rows with no value at 2 requests/s: the run stops asking after PROVISIONAL_ASK_SECONDS
    (not its 300 s budget), every row has a value after its commit, and the next run refines."""
    from cost_sync.run.sync import PROVISIONAL_ASK_SECONDS

    hostwinds.instances = [instance(n) for n in range(1, 31)]
    store.rows.clear()
    for n in range(1, 31):
        store.add_row(str(n))
    ticks = itertools.count()
    first = await run(client, store, config=rated(), clock=lambda: float(next(ticks)))
    asked = first.report.price_cache.asked
    assert 0 < asked <= PROVISIONAL_ASK_SECONDS
    assert first.report.price_cache.pending == 30 - asked
    assert first.report.provisional == 30 - asked
    assert all(row.approximate_cost is not None for row in store.rows.values())
    # Rows now have values: the next run asks within its whole budget, and prices them all.
    ticks2 = itertools.count()
    second = await run(
        client, store, at=T0 + timedelta(minutes=1), config=rated(), clock=lambda: float(next(ticks2))
    )
    assert second.report.price_cache.pending == 0
    assert second.report.provisional == 0
    assert store.value("3") == Decimal("7.49")  # its own cycle price


async def test_rows_with_values_keep_the_whole_budget(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """Every row already has a value: no early stop, every service asked within the budget."""
    hostwinds.instances = [instance(n) for n in range(1, 31)]
    store.rows.clear()
    for n in range(1, 31):
        store.add_row(str(n), cost="9.99")
    ticks = itertools.count()
    result = await run(client, store, config=rated(), clock=lambda: float(next(ticks)))
    assert result.report.price_cache.asked == 30
    assert result.report.price_cache.pending == 0


async def test_rows_the_price_list_cannot_estimate_keep_the_whole_budget(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """No value, but no plan in the list: nothing to commit early, so no early stop."""
    hostwinds.instances = [instance(n, product_id=999) for n in range(1, 31)]
    store.rows.clear()
    for n in range(1, 31):
        store.add_row(str(n))
    ticks = itertools.count()
    result = await run(client, store, config=rated(), clock=lambda: float(next(ticks)))
    assert result.report.price_cache.asked == 30
    assert result.report.provisional == 0


async def test_refining_a_provisional_value_is_held_like_any_other_change(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """A provisional 9.99 whose own price is 1.00: not a first price, so the 90% drop is held."""
    hostwinds.cycle_prices[9] = {"monthly": "1.00"}
    ticks = itertools.count()
    await run(client, store, config=settings(max_run_seconds=4.5), clock=lambda: float(next(ticks)))
    assert store.value("9") == Decimal("9.99")
    second = await run(client, store, at=T0 + timedelta(minutes=1))
    assert [h.hostwinds_instance_id for h in second.held] == ["9"]
    assert store.value("9") == Decimal("9.99")
