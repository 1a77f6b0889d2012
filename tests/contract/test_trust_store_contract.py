"""One contract for the trust store: :class:`TrustStore` on PostgreSQL and :class:`MemoryTrustStore`
observed through :class:`TrustStoreProtocol` agree on what a run left behind and what approve does."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from cost_sync.domain.models import Cycle, Fallback, Observation, PriceSource, RowState
from tests.contract.conftest import Backend
from tests.contract.test_run_store_contract import ACTIVE, commit, held_change, priced, report


async def test_identities_name_rows_by_id_instance_serviceid_and_server_uuid(backend: Backend) -> None:
    """A row is named by its id, its hostwinds_instance_id (any case) and the instance its kept state
    matched: serviceid, server_uuid in any case."""
    row_id = await backend.add_row("HW-1")
    other = await backend.add_row("2", "decommissioned")
    await commit(backend, row_states=[RowState(row_id, True, 4242, "ABC-def", 7)])
    index = await backend.trust.identities()
    for target in (str(row_id), "hw-1", "4242", "abc-DEF"):
        assert [r.id for r in index.named(target)] == [row_id], target
    (named,) = index.named("2")
    assert (named.id, named.status, named.serviceid, named.server_uuid) == (
        other,
        "decommissioned",
        None,
        None,
    )
    (matched,) = index.named("4242")
    assert (matched.serviceid, matched.server_uuid) == (4242, "abc-def")


async def test_row_and_fleet_total(backend: Backend) -> None:
    """A row as explain shows it (None once deleted or never there); the fleet total counts rows in scope."""
    row_id = await backend.add_row("1", cost="10.50")
    await backend.add_row("2", cost="2.25")
    await backend.add_row("3")
    await backend.add_row("4", "decommissioned", "100.00")
    row = await backend.trust.row(row_id)
    assert row is not None
    assert (row.row_id, row.hostwinds_instance_id, row.status, row.approximate_cost) == (
        row_id,
        "1",
        "active",
        Decimal("10.50"),
    )
    assert (row.region, row.monthly_cost) == (None, None)
    assert await backend.trust.row(uuid.uuid4()) is None
    assert await backend.trust.fleet_total(ACTIVE) == Decimal("12.75")
    assert await backend.trust.fleet_total(["provisioning"]) == Decimal("0")


async def test_report_rows_carry_the_latest_basis_and_the_kept_state(backend: Backend) -> None:
    """Each row in scope with its latest history entry's basis and its kept state; a provisional
    estimate stays provisional until an answer of its service's own cycle prices is cached."""
    await backend.add_row("1", cost="1.00")
    await backend.add_row("2")
    await backend.add_row("3", "decommissioned")
    rows = {r.hostwinds_instance_id: r for r in await backend.store.read_rows(ACTIVE)}
    states = [
        RowState(rows["1"].id, True, 11, None, 101, None, None, True),
        RowState(rows["2"].id, False, None, None, None, "no_match", "not in the account"),
    ]
    estimate = {"source": PriceSource.PRICE_LIST, "cycle": Cycle.ANNUALLY, "product_id": 101}
    outcomes = [priced(rows["1"], "8.00", product_name="SSD 1", provisional=True, **estimate)]
    await commit(backend, outcomes, row_states=states)
    first, second = await backend.trust.report_rows(ACTIVE)
    if first.row_id != rows["1"].id:
        first, second = second, first
    assert (first.source, first.cycle, first.product_id, first.product_name) == (
        "price_list",
        "annually",
        101,
        "SSD 1",
    )
    assert (first.approximate_cost, first.upgrade_available, first.provisional) == (
        Decimal("8.00"),
        True,
        True,
    )
    assert (second.source, second.unpriced_reason, second.unpriced_detail) == (
        None,
        "no_match",
        "not in the account",
    )
    assert (second.upgrade_available, second.provisional, second.approximate_cost) == (False, False, None)
    assert sorted(r.row_id for r in await backend.trust.report_rows(ACTIVE)) == sorted(
        [rows["1"].id, rows["2"].id]
    )
    later = datetime.now(UTC) + timedelta(seconds=1)
    await backend.store.save_observations(
        [Observation(11, {Cycle.ANNUALLY: "96.00"}, "fp", later, uuid.uuid4())]
    )
    refined = [r for r in await backend.trust.report_rows(ACTIVE) if r.row_id == rows["1"].id]
    assert [r.provisional for r in refined] == [False]


async def test_history_since_names_the_run_and_its_trigger(backend: Backend) -> None:
    """Every change to a row in scope since a time, oldest first, with the trigger of the run that made it."""
    await backend.add_row("1", cost="1.00")
    (row,) = await backend.store.read_rows(ACTIVE)
    start = datetime.now(UTC) - timedelta(seconds=5)
    first = await commit(backend, [priced(row, "2.00")], trigger="schedule")
    (row,) = await backend.store.read_rows(ACTIVE)
    second = await commit(backend, [priced(row, "3.00")], trigger="api")
    changes = await backend.trust.history_since(ACTIVE, start)
    assert [
        (c.run_id, c.row_id, c.hostwinds_instance_id, c.old, c.new, c.trigger, c.approved) for c in changes
    ] == [
        (first.run_id, row.id, "1", Decimal("1.00"), Decimal("2.00"), "schedule", False),
        (second.run_id, row.id, "1", Decimal("2.00"), Decimal("3.00"), "api", False),
    ]
    assert await backend.trust.history_since(ACTIVE, datetime.now(UTC) + timedelta(hours=1)) == []
    assert await backend.trust.history_since(["decommissioned"], start) == []
    assert [h.new for h in await backend.trust.history(row.id)] == [Decimal("3.00"), Decimal("2.00")]


async def test_approve_applies_the_change_as_shown_where_the_row_still_holds_its_old_value(
    backend: Backend,
) -> None:
    """A held change shown with its run and value is applied, recorded as approved naming the run
    that proposed it, and leaves the held list; one shown under another run or value, or whose row
    changed since, is not; the ledger row counts what was applied."""
    for n in range(1, 5):
        await backend.add_row(str(n), cost="10.00")
    rows = {r.hostwinds_instance_id: r for r in await backend.store.read_rows(ACTIVE)}
    held = [held_change(rows[n], "100.00") for n in ("1", "2", "3", "4")]
    proposing = await commit(backend, held=held, decided=[r.id for r in rows.values()])
    await backend.platform_sets(rows["4"].id, cost="11.00")
    approve_run = uuid.uuid4()
    shown = [
        (rows["1"].id, proposing.run_id, Decimal("100.00")),
        (rows["2"].id, uuid.uuid4(), Decimal("100.00")),
        (rows["3"].id, proposing.run_id, Decimal("99.00")),
        (rows["4"].id, proposing.run_id, Decimal("100.00")),
    ]
    applied = await backend.trust.approve(
        approve_run, shown, statuses=ACTIVE, report=report(approve_run, trigger="approve"), lock_timeout=1.0
    )
    assert applied == [rows["1"].id]
    values = {r.hostwinds_instance_id: r.approximate_cost for r in await backend.store.read_rows(ACTIVE)}
    assert values == {
        "1": Decimal("100.00"),
        "2": Decimal("10.00"),
        "3": Decimal("10.00"),
        "4": Decimal("11.00"),
    }
    (entry,) = await backend.trust.history(rows["1"].id)
    assert (entry.run_id, entry.old, entry.new, entry.approved, entry.proposed_by) == (
        approve_run,
        Decimal("10.00"),
        Decimal("100.00"),
        True,
        proposing.run_id,
    )
    assert (entry.source, entry.cycle, entry.fallback, entry.provisional) == (
        "price_list",
        "monthly",
        None,
        False,
    )
    assert sorted(h.row_id for h in await backend.trust.held()) == sorted(rows[n].id for n in ("2", "3", "4"))
    assert await backend.store.last_good_run() is not None  # the proposing run; approve runs never count
    assert (await backend.trust.last_fleet_run()).run_id == proposing.run_id  # type: ignore[union-attr]
    (reference,) = (await backend.store.price_references([rows["1"].id], window_seconds=3600)).values()
    assert (reference.last_written, reference.anchor, reference.anchor_approved) == (
        Decimal("100.00"),
        Decimal("100.00"),
        True,
    )
    changes = await backend.trust.history_since(ACTIVE, datetime.now(UTC) - timedelta(hours=1))
    assert [(c.trigger, c.approved) for c in changes] == [("approve", True)]


async def test_a_held_price_list_fallback_is_approved_without_it(backend: Backend) -> None:
    """A held change keeps no fallback or provisional mark: its approval's history entry has none."""
    await backend.add_row("1", cost="1.00")
    (row,) = await backend.store.read_rows(ACTIVE)
    change = held_change(row, "50.00")
    marked = dataclasses.replace(change.proposed, fallback=Fallback.CYCLE_PRICES_ERROR, provisional=True)
    change = dataclasses.replace(change, proposed=marked)
    proposing = await commit(backend, held=[change], decided=[row.id])
    run_id = uuid.uuid4()
    shown = [(row.id, proposing.run_id, Decimal("50.00"))]
    await backend.trust.approve(run_id, shown, statuses=ACTIVE, report=report(run_id, trigger="approve"))
    (entry,) = await backend.trust.history(row.id)
    assert (entry.fallback, entry.provisional, entry.approved) == (None, False, True)


async def test_nothing_kept_reads_empty(backend: Backend) -> None:
    """Before any run: no held changes, observations, runs or tenant days."""
    assert await backend.trust.held() == []
    assert await backend.trust.held_summary() == (0, None)
    assert await backend.trust.oldest_observation() is None
    assert await backend.trust.last_fleet_run() is None
    assert await backend.trust.tenant_days(date(2020, 1, 1)) == []
    assert await backend.trust.observation(1) is None
    assert await backend.trust.row_state(uuid.uuid4()) is None
    assert await backend.trust.history(uuid.uuid4()) == []
