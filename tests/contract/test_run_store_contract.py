"""One contract for the run store: :class:`Store` on PostgreSQL and :class:`MemoryStore` observed
through :class:`RunStore` (and the trust protocol where a run's writes are read back) agree."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cost_sync.domain.models import (
    Cycle,
    Estimate,
    HeldChange,
    Observation,
    Plan,
    PriceSource,
    RowOutcome,
    RowState,
    RunReport,
    VpsRow,
)
from cost_sync.errors import LockTimeout, RunServed
from cost_sync.settings import Settings
from cost_sync.store.protocols import CachedPriceList
from cost_sync.store.sqlfiles import queries
from tests.contract.conftest import Backend

ACTIVE = ["active"]


def report(
    run_id: uuid.UUID, *, outcome: str = "succeeded", trigger: str = "schedule", **fields: object
) -> RunReport:
    """A ledger row (``started_at``/``finished_at`` now unless given)."""
    now = datetime.now(UTC)
    values: dict[str, object] = {"started_at": now, "finished_at": now, **fields}
    return RunReport(run_id=run_id, trigger=trigger, outcome=outcome, **values)  # type: ignore[arg-type]


def priced(row: VpsRow, monthly: str, **estimate: object) -> RowOutcome:
    """The run priced ``row`` (as it read it) at ``monthly``."""
    fields: dict[str, object] = {"source": PriceSource.CYCLE_PRICES, "cycle": Cycle.MONTHLY, **estimate}
    return RowOutcome(row, None, Estimate(monthly=Decimal(monthly), **fields))  # type: ignore[arg-type]


def held_change(row: VpsRow, proposed: str) -> HeldChange:
    """A change of ``row`` to ``proposed`` the guard held."""
    return HeldChange(
        row_id=row.id,
        hostwinds_instance_id=row.hostwinds_instance_id,
        old=row.approximate_cost,
        proposed=Estimate(monthly=Decimal(proposed), source=PriceSource.PRICE_LIST, cycle=Cycle.MONTHLY),
        ratio=Decimal("10"),
        reason="over the limit",
    )


async def commit(
    backend: Backend,
    outcomes: Sequence[RowOutcome] = (),
    *,
    run_id: uuid.UUID | None = None,
    held: Sequence[HeldChange] = (),
    decided: Sequence[uuid.UUID] = (),
    row_states: Sequence[RowState] = (),
    **fields: object,
) -> RunReport:
    """One committed whole-fleet run; its report says how many rows it updated."""
    run_id = run_id or uuid.uuid4()
    return await backend.store.commit_run(
        run_id,
        outcomes,
        statuses=ACTIVE,
        finish=lambda updated: report(run_id, updated=updated, **fields),
        held=held,
        decided=decided,
        row_states=row_states,
    )


async def rows_by_hw(backend: Backend) -> dict[str | None, VpsRow]:
    """The rows in scope by hostwinds_instance_id."""
    return {r.hostwinds_instance_id: r for r in await backend.store.read_rows(ACTIVE)}


# --- rows -------------------------------------------------------------------------------------


async def test_read_rows_are_the_rows_in_scope_by_id_never_seen(backend: Backend) -> None:
    """Only rows whose status is in scope, ordered by id, values exact, ``seen`` None before a run."""
    ids = {await backend.add_row(f"hw-{n}", cost=f"{n}.25") for n in range(5)}
    ids.add(await backend.add_row(None))
    gone = await backend.add_row("gone", "decommissioned", "9.00")
    rows = await backend.store.read_rows(ACTIVE)
    assert [r.id for r in rows] == sorted(ids)
    assert {r.hostwinds_instance_id for r in rows} == {*(f"hw-{n}" for n in range(5)), None}
    assert {r.hostwinds_instance_id: r.approximate_cost for r in rows}["hw-3"] == Decimal("3.25")
    assert all(r.seen is None and r.status == "active" for r in rows)
    assert await backend.store.read_rows(["decommissioned"]) == [
        VpsRow(gone, "gone", "decommissioned", Decimal("9.00"))
    ]


async def test_read_identities_are_every_row(backend: Backend) -> None:
    """(id, hostwinds_instance_id, status) of every row, in scope or not."""
    a = await backend.add_row("1")
    b = await backend.add_row("2", "decommissioned")
    c = await backend.add_row(None, "provisioning")
    assert set(await backend.store.read_identities()) == {
        (a, "1", "active"),
        (b, "2", "decommissioned"),
        (c, None, "provisioning"),
    }


def test_row_state_key_is_its_key_fields_in_order() -> None:
    """``RowState.KEY_FIELDS`` names what ``key()`` compares, in order: the store reads ``seen`` by them."""
    state = RowState(uuid.uuid4(), True, 7, "UU", 8, "reason", "detail", True)
    assert state.key() == tuple(getattr(state, name) for name in RowState.KEY_FIELDS)


def test_read_rows_selects_every_key_field_by_name() -> None:
    """The sync query ``read_rows`` selects each field ``seen`` is read by (the row state's columns)."""
    sql = queries("sync")["read_rows"]
    selected = sql.split("FROM", 1)[0]
    for name in RowState.KEY_FIELDS:
        assert f"s.{name}" in selected, name


@pytest.mark.parametrize(
    "state",
    [
        RowState(uuid.UUID(int=0), True, 12345, "Server-UUID-1", 77, None, None, True),
        RowState(uuid.UUID(int=0), False, None, None, None, "no_match", "not in the account", False),
        RowState(uuid.UUID(int=0), True, 9, None, None, "cycle_unknown", "weekly", False),
    ],
    ids=["matched", "unmatched", "unpriced"],
)
async def test_a_row_state_is_read_back_as_seen(backend: Backend, state: RowState) -> None:
    """What a run saw of a row is what the next run reads as ``seen`` (its ``key()``), field by field."""
    row_id = await backend.add_row("1", cost="5.00")
    state = dataclasses.replace(state, row_id=row_id)
    await commit(backend, row_states=[state])
    (row,) = await backend.store.read_rows(ACTIVE)
    assert row.seen == state.key()
    assert await backend.trust.row_state(row_id) == state


# --- observations and price lists ------------------------------------------------------------


def observation(
    serviceid: int, at: datetime, price: str = "9.99", run_id: uuid.UUID | None = None
) -> Observation:
    """A cached get_billingcycle_prices answer."""
    return Observation(
        serviceid, {Cycle.MONTHLY: price, Cycle.ANNUALLY: "99.00"}, f"fp-{price}", at, run_id or uuid.uuid4()
    )


async def test_observations_are_kept_and_an_older_one_never_replaces_a_newer(backend: Backend) -> None:
    """Saved answers read back exactly; an older answer keeps the newer one; unknown services are absent."""
    now = datetime.now(UTC).replace(microsecond=0)
    first = [observation(1, now - timedelta(hours=1)), observation(2, now)]
    await backend.store.save_observations(first)
    await backend.store.save_observations([])
    assert await backend.store.read_observations([1, 2, 3]) == {1: first[0], 2: first[1]}
    assert await backend.store.read_observations([]) == {}
    newer, older = observation(1, now, "10.99"), observation(2, now - timedelta(days=1), "1.00")
    await backend.store.save_observations([newer, older])
    assert await backend.store.read_observations([1, 2]) == {1: newer, 2: first[1]}
    cached = await backend.trust.observation(1)
    assert cached is not None
    assert (cached.prices, cached.fingerprint, cached.observed, cached.run_id) == (
        dict(newer.prices),
        newer.fingerprint,
        newer.observed_at,
        newer.run_id,
    )
    assert await backend.trust.oldest_observation() == now


async def test_an_observation_dated_in_the_future_is_replaced_by_an_older_one(backend: Backend) -> None:
    """A kept answer dated ahead of the clock (a clock that ran ahead) would never be replaced: it is."""
    now = datetime.now(UTC).replace(microsecond=0)
    await backend.store.save_observations([observation(1, now + timedelta(days=3), "5.00")])
    current = observation(1, now, "6.00")
    await backend.store.save_observations([current])
    assert await backend.store.read_observations([1]) == {1: current}


def price_list(
    at: datetime, price: str, *, drive_type: str | None = None, name: str = "SSD 1"
) -> CachedPriceList:
    """A cached price list of one plan."""
    plan = Plan(id=101, rid=5, name=name, prices={Cycle.MONTHLY: price})
    return CachedPriceList(False, drive_type, "rid", {5: plan}, at, uuid.uuid4())


async def test_price_lists_are_kept_as_the_cache_stores_them(backend: Backend) -> None:
    """A price list is read back by its options (no drive type is the empty one), its plan names one
    printable line; an older list never replaces a newer one, a list dated in the future is replaced."""
    now = datetime.now(UTC).replace(microsecond=0)
    saved = price_list(now, "9.99", name="SSD\n1")
    await backend.store.save_price_list(saved)
    for drive_type in (None, ""):
        cached = await backend.trust.price_list(False, drive_type, "rid")
        assert cached is not None
        assert (cached.observed_at, cached.run_id, cached.drive_type) == (now, saved.run_id, drive_type)
        assert cached.plans[5].prices == {Cycle.MONTHLY: "9.99"}
        assert "\n" not in (cached.plans[5].name or "")
    assert await backend.trust.price_list(True, None, "rid") is None
    await backend.store.save_price_list(price_list(now - timedelta(hours=1), "1.00", drive_type=""))
    assert (await backend.trust.price_list(False, None, "rid")).plans[5].prices == {Cycle.MONTHLY: "9.99"}  # type: ignore[union-attr]
    await backend.store.save_price_list(price_list(now + timedelta(days=2), "2.00"))
    await backend.store.save_price_list(price_list(now, "3.00"))
    assert (await backend.trust.price_list(False, None, "rid")).plans[5].prices == {Cycle.MONTHLY: "3.00"}  # type: ignore[union-attr]


# --- the ledger -------------------------------------------------------------------------------


async def test_last_good_run_is_the_last_successful_whole_fleet_run_recorded(backend: Backend) -> None:
    """Failed, targeted and approve runs do not count; the order is the ledger's, not the runs' own
    clocks: a run recorded later whose clock was behind is still the last."""
    assert await backend.store.last_good_run() is None
    await backend.store.record_run(report(uuid.uuid4(), outcome="failed", error="boom"))
    await commit(backend, instances=["1"])
    await commit(backend, trigger="approve")
    assert await backend.store.last_good_run() is None
    now = datetime.now(UTC)
    first = await commit(backend, plans_in_use=[101], started_at=now, finished_at=now)
    behind = now - timedelta(hours=2)
    second = await commit(
        backend, warnings=["look"], started_at=behind, finished_at=behind + timedelta(seconds=1)
    )
    last = await backend.store.last_good_run()
    assert last is not None
    assert (last.run_id, last.finished, last.plans_in_use) == (second.run_id, second.finished_at, None)
    fleet = await backend.trust.last_fleet_run()
    assert fleet is not None
    assert (fleet.run_id, fleet.trigger, fleet.warnings) == (second.run_id, "schedule", ("look",))
    assert first.plans_in_use == [101]


async def test_a_run_begun_then_discarded_leaves_nothing_and_a_committed_one_stays(backend: Backend) -> None:
    """begin_run then discard_run: no ledger row; begin_run then commit: the run is in the ledger,
    and discarding it afterwards keeps it."""
    discarded = uuid.uuid4()
    await backend.store.begin_run(discarded, "schedule", datetime.now(UTC), None)
    await backend.store.discard_run(discarded)
    assert await backend.store.last_good_run() is None
    kept = uuid.uuid4()
    await backend.store.begin_run(kept, "schedule", datetime.now(UTC), None)
    await commit(backend, run_id=kept)
    await backend.store.discard_run(kept)
    assert (await backend.store.last_good_run()).run_id == kept  # type: ignore[union-attr]


async def test_a_recorded_run_keeps_its_first_outcome(backend: Backend) -> None:
    """A run recorded as failed stays failed if recorded again: the ledger replaces only a 'running' row."""
    run_id = uuid.uuid4()
    await backend.store.begin_run(run_id, "schedule", datetime.now(UTC), None)
    await backend.store.record_run(report(run_id, outcome="failed", error="the database failed"))
    await backend.store.record_run(report(run_id))
    assert await backend.store.last_good_run() is None


# --- the write --------------------------------------------------------------------------------


async def test_commit_writes_only_changed_rows_in_scope_with_one_history_entry_each(backend: Backend) -> None:
    """A new value, a first value; not an equal value, a row that left the scope, a row whose value the
    platform changed to the run's value; every write has its history entry and the report counts them."""
    for hw, cost in (
        ("new", "5.00"),
        ("first", None),
        ("same", "7.00"),
        ("left", "1.00"),
        ("moved", "2.00"),
        ("raced", "3.00"),
    ):
        await backend.add_row(hw, cost=cost)
    read = await rows_by_hw(backend)
    await backend.platform_sets(read["left"].id, status="decommissioned")
    # Read at 3.00 and priced 3.00 (no change to send); the platform sets 4.00 meanwhile: kept.
    await backend.platform_sets(read["raced"].id, cost="4.00")
    # Read at 2.00 and priced 2.50; the platform sets 2.50 meanwhile: nothing to write.
    await backend.platform_sets(read["moved"].id, cost="2.50")
    outcomes = [
        priced(read["new"], "6.00"),
        priced(read["first"], "8.00"),
        priced(read["same"], "7.00"),
        priced(read["left"], "9.00"),
        priced(read["moved"], "2.50"),
        priced(read["raced"], "3.00"),
    ]
    done = await commit(backend, outcomes)
    assert done.updated == 2
    after = await rows_by_hw(backend)
    assert {hw: r.approximate_cost for hw, r in after.items()} == {
        "new": Decimal("6.00"),
        "first": Decimal("8.00"),
        "same": Decimal("7.00"),
        "moved": Decimal("2.50"),
        "raced": Decimal("4.00"),
    }
    history = await backend.trust.history(read["new"].id)
    assert [(h.run_id, h.old, h.new, h.source, h.cycle, h.approved) for h in history] == [
        (done.run_id, Decimal("5.00"), Decimal("6.00"), "cycle_prices", "monthly", False)
    ]
    for hw in ("same", "left", "moved", "raced"):
        assert await backend.trust.history(read[hw].id) == []
    references = await backend.store.price_references([r.id for r in read.values()], window_seconds=86400)
    assert set(references) == {read["new"].id, read["first"].id}
    assert references[read["new"].id].last_written == Decimal("6.00")
    assert references[read["new"].id].anchor == Decimal("5.00")
    assert references[read["first"].id].anchor == Decimal("8.00")
    assert not references[read["new"].id].anchor_approved


async def test_a_history_entry_keeps_the_estimate_it_came_from(backend: Backend) -> None:
    """Cycle, cycle price, months, product, alias, fallback and provisional go into the history entry."""
    row_id = await backend.add_row("1")
    (row,) = await backend.store.read_rows(ACTIVE)
    await commit(
        backend,
        [
            priced(
                row,
                "10.00",
                source=PriceSource.PRICE_LIST,
                cycle=Cycle.QUARTERLY,
                cycle_price=Decimal("30.00"),
                months=3,
                product_id=77,
                product_name="SSD 2",
                cycle_alias="Quarter",
                fallback=None,
                provisional=True,
            )
        ],
    )
    (entry,) = await backend.trust.history(row_id)
    assert (entry.source, entry.cycle, entry.cycle_price, entry.months, entry.product_id) == (
        "price_list",
        "quarterly",
        Decimal("30.00"),
        3,
        77,
    )
    assert (entry.product_name, entry.cycle_alias, entry.fallback, entry.provisional) == (
        "SSD 2",
        "Quarter",
        None,
        True,
    )


async def test_price_references_anchor_on_the_window(backend: Backend) -> None:
    """With no drift window the anchor is the last value written; an approval inside the window anchors."""
    await backend.add_row("1", cost="1.00")
    (row,) = await backend.store.read_rows(ACTIVE)
    await commit(backend, [priced(row, "2.00")])
    (row,) = await backend.store.read_rows(ACTIVE)
    await commit(backend, [priced(row, "3.00")])
    (reference,) = (await backend.store.price_references([row.id], window_seconds=0)).values()
    assert (reference.last_written, reference.anchor, reference.anchor_approved) == (
        Decimal("3.00"),
        Decimal("3.00"),
        False,
    )
    (reference,) = (await backend.store.price_references([row.id], window_seconds=3600)).values()
    assert (reference.anchor, reference.anchor_approved) == (Decimal("1.00"), False)
    assert await backend.store.price_references([], window_seconds=0) == {}


# --- held changes -----------------------------------------------------------------------------


async def test_a_held_change_is_stored_not_applied_and_keeps_its_run_and_since(backend: Backend) -> None:
    """The held value is not written; proposed again with the same value it keeps its run and ``since``
    (a time); another value replaces both; a run that decides the row without holding it clears it."""
    await backend.add_row("1", cost="10.00")
    (row,) = await backend.store.read_rows(ACTIVE)
    before = datetime.now(UTC) - timedelta(seconds=5)
    first = await commit(
        backend, [priced(row, "100.00")], held=[held_change(row, "100.00")], decided=[row.id]
    )
    assert first.updated == 0
    assert (await backend.store.read_rows(ACTIVE))[0].approximate_cost == Decimal("10.00")
    (held,) = await backend.trust.held()
    assert isinstance(held.since, datetime)
    assert before <= held.since <= datetime.now(UTC) + timedelta(seconds=5)
    assert (held.row_id, held.run_id, held.old, held.proposed, held.source) == (
        row.id,
        first.run_id,
        Decimal("10.00"),
        Decimal("100.00"),
        "price_list",
    )
    assert await backend.trust.held_summary() == (1, held.since)
    await asyncio.sleep(0.01)
    await commit(backend, [priced(row, "100.00")], held=[held_change(row, "100.00")], decided=[row.id])
    (again,) = await backend.trust.held()
    assert (again.run_id, again.since) == (first.run_id, held.since)
    await asyncio.sleep(0.01)
    other = await commit(
        backend, [priced(row, "120.00")], held=[held_change(row, "120.00")], decided=[row.id]
    )
    (replaced,) = await backend.trust.held([row.id])
    assert (replaced.run_id, replaced.proposed) == (other.run_id, Decimal("120.00"))
    assert replaced.since > held.since
    await commit(backend, [], decided=[uuid.uuid4()])
    assert len(await backend.trust.held()) == 1
    await commit(backend, [priced(row, "10.00")], decided=[row.id])
    assert await backend.trust.held() == []
    assert await backend.trust.held_summary() == (0, None)


# --- the lock ---------------------------------------------------------------------------------


async def test_one_run_holds_the_lock_at_a_time(backend: Backend) -> None:
    """A second run waits ``timeout`` and gives up with LockTimeout; once released the lock is free;
    what the block raises passes through and releases it."""
    other = backend.another_store()
    async with backend.store.lock(timeout=1, run_id=uuid.uuid4()):
        with pytest.raises(
            LockTimeout, match=r"^another run is in progress \(waited 0.3 s for it to finish\)$"
        ):
            async with other.lock(timeout=0.3, run_id=uuid.uuid4()):
                pass
    with pytest.raises(ValueError, match="inside"):
        async with other.lock(timeout=1, run_id=uuid.uuid4()):
            raise ValueError("inside")
    async with backend.store.lock(timeout=1, run_id=uuid.uuid4()):
        pass


# --- attribution ------------------------------------------------------------------------------


async def test_attribution_without_tenants_writes_every_vps_in_scope_unallocated(backend: Backend) -> None:
    """With no SMTP IPs, each VPS in scope is one unallocated snapshot line."""
    for n in range(3):
        await backend.add_row(str(n), cost=f"{n + 1}.00")
    await backend.add_row("gone", "decommissioned", "1.00")
    await backend.add_row("unknown")
    assert await backend.store.write_attribution(Settings(), uuid.uuid4()) == 4


async def test_a_scheduled_fire_a_whole_fleet_run_took_the_lock_after_is_served(backend: Backend) -> None:
    """RunServed names the whole-fleet run that took the lock at or after the fire, even while it
    still holds it; a targeted run, a discarded run or a later fire serves nothing."""
    other = backend.another_store()
    fire = datetime.now(UTC) - timedelta(seconds=1)
    targeted, discarded, serving, late = (uuid.uuid4() for _ in range(4))
    await backend.store.begin_run(targeted, "api", datetime.now(UTC), ["1"])
    async with backend.store.lock(timeout=1, run_id=targeted):
        pass
    await commit(backend, run_id=targeted, instances=["1"])
    await backend.store.begin_run(discarded, "schedule", datetime.now(UTC), None)
    async with backend.store.lock(timeout=1, run_id=discarded, served_since=fire):
        pass
    await backend.store.discard_run(discarded)
    await backend.store.begin_run(serving, "schedule", datetime.now(UTC), None)
    await backend.store.begin_run(late, "schedule", datetime.now(UTC), None)
    async with backend.store.lock(timeout=1, run_id=serving, served_since=fire):
        with pytest.raises(RunServed) as caught:
            async with other.lock(timeout=5, run_id=late, served_since=fire):
                pass
        assert caught.value.served_by == str(serving)
        assert str(caught.value).startswith(
            f"run {serving} took the run lease at or after this scheduled fire"
        )
    await commit(backend, run_id=serving)
    with pytest.raises(RunServed):
        async with other.lock(timeout=1, run_id=late, served_since=fire):
            pass
    async with other.lock(timeout=1, run_id=late, served_since=datetime.now(UTC) + timedelta(seconds=5)):
        pass
