"""The run's pure steps on plain data: match, decide, price, guard, and the report's cache figures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cost_sync.domain.fingerprint import fingerprint
from cost_sync.domain.guard import Reference
from cost_sync.domain.models import (
    AskReason,
    Cycle,
    Estimate,
    Fallback,
    Instance,
    Observation,
    Plan,
    PriceSource,
    RowOutcome,
    Unpriced,
    UnpricedReason,
    VpsRow,
    parse_instance,
)
from cost_sync.run import phases
from cost_sync.settings import Settings
from cost_sync.store.protocols import LastRun
from tests.fakes import instance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PLAN_101 = Plan(id=101, name="Unmanaged Linux 1 CPU / 2 GB", prices={Cycle.MONTHLY: "9.99"})
LISTS = {(False, "ssd"): {101: PLAN_101}}


def inst(serviceid: int, **fields: Any) -> Instance:
    """The fake fleet's instance, as the run reads it: monthly, ssd, plan 101 unless told otherwise."""
    return parse_instance(instance(serviceid, **fields))


def row(serviceid: int, cost: str | None = "9.99", *, matched_before: bool = False) -> VpsRow:
    """A row naming ``serviceid``; ``matched_before``: the last run matched it."""
    seen = (True,) if matched_before else None
    return VpsRow(uuid.uuid4(), str(serviceid), "active", None if cost is None else Decimal(cost), seen)


def listed(rows: list[VpsRow], instances: list[Instance], **fields: Any) -> phases.Listed:
    return phases.Listed(
        instances=instances,
        instances_listed=len(instances),
        conflicting=fields.pop("conflicting", set()),
        shared_uuids={},
        rows=rows,
        **fields,
    )


def observed(instance: Instance, at: datetime, prices: dict[Cycle, str] | None = None) -> Observation:
    return Observation(
        serviceid=instance.serviceid,
        prices=prices or {},
        fingerprint=fingerprint(instance, managed=False),
        observed_at=at,
        run_id=uuid.uuid4(),
    )


def settings(**fields: Any) -> Settings:
    return Settings(**fields)


def test_match_wants_no_price_for_an_overridden_row_or_a_conflicting_service() -> None:
    """Service 2 was listed twice with different data, row 3 has an override: only 1 is asked;
    two rows on service 1 are reported as sharing it."""
    rows = [row(1), row(1), row(2), row(3)]
    matched = phases.match(listed(rows, [inst(1), inst(2), inst(3)], conflicting={2}), {"3": Decimal(42)})
    assert sorted(matched.wanted) == [1]
    assert [r.id for r in matched.shared[1]] == [rows[0].id, rows[1].id]
    assert [i is not None for _, i in matched.matches] == [True, True, True, True]


def test_decide_asks_only_what_the_cache_cannot_answer_most_needed_first() -> None:
    """Fresh: reused. Another plan: changed. Never asked: new. Older than the max age: stale."""
    fresh, upgraded, new, old = inst(1), inst(2, product_id=102), inst(3), inst(4)
    observations = {
        1: observed(fresh, T0 - timedelta(minutes=5)),
        2: observed(inst(2), T0 - timedelta(minutes=5)),
        4: observed(old, T0 - timedelta(days=60)),
    }
    matched = phases.match(listed([row(n) for n in (1, 2, 3, 4)], [fresh, upgraded, new, old]), {})
    decision = phases.decide(matched, observations, settings(), now=T0, full=False, provisional_seconds=10)
    assert list(decision.plan.hits) == [1]
    assert decision.plan.asks == {2: AskReason.CHANGED, 3: AskReason.NEW, 4: AskReason.STALE}
    assert decision.order == [2, 3, 4]
    assert decision.cold == []

    full = phases.decide(matched, observations, settings(), now=T0, full=True, provisional_seconds=10)
    assert full.plan.hits == {}
    assert set(full.plan.asks.values()) == {AskReason.FORCED}


def test_decide_names_the_rows_without_value_when_the_rate_cannot_ask_them_in_time() -> None:
    """Two services to ask at one request a second take longer than one second: the row with no
    value is cold (the price list's estimate is committed early); the row with a value is not."""
    instances = [inst(1), inst(2)]
    matched = phases.match(listed([row(1, None), row(2)], instances), {})
    slow = settings(hostwinds={"requests_per_second": 1})
    decision = phases.decide(matched, {}, slow, now=T0, full=False, provisional_seconds=1)
    assert decision.cold == [instances[0]]
    roomy = phases.decide(matched, {}, slow, now=T0, full=False, provisional_seconds=10)
    assert roomy.cold == []


def test_price_uses_the_cache_falls_back_for_a_failed_service_and_withholds_pending() -> None:
    """1: its cached cycle price. 2: asked, an error envelope: the price list, with the fallback
    named. 3: not reached: pending. 4: listed twice differently: unpriced, not guessed."""
    instances = [inst(1), inst(2), inst(3), inst(4)]
    the_listing = listed([row(n) for n in (1, 2, 3, 4)], instances, conflicting={4})
    matched = phases.match(the_listing, {})
    cached = {1: observed(instances[0], T0, {Cycle.MONTHLY: "7.49"})}
    decision = phases.decide(matched, cached, settings(), now=T0, full=False, provisional_seconds=10)
    fetched = phases.Fetched(
        price_lists=LISTS,
        failed={2: (Fallback.CYCLE_PRICES_ERROR, "Service not found")},
        pending=[3],
    )
    priced = phases.price(the_listing, matched, decision.plan, fetched, settings())
    results = [o.result for o in priced.outcomes]
    assert isinstance(results[0], Estimate)
    assert (results[0].monthly, results[0].source) == (Decimal("7.49"), PriceSource.CYCLE_PRICES)
    assert isinstance(results[1], Estimate)
    assert (results[1].monthly, results[1].source) == (Decimal("9.99"), PriceSource.PRICE_LIST)
    assert results[1].fallback is Fallback.CYCLE_PRICES_ERROR
    assert results[2] == Unpriced(UnpricedReason.PENDING, "not reached within this run's time budget")
    assert isinstance(results[3], Unpriced)
    assert results[3].reason is UnpricedReason.DUPLICATE_INSTANCE
    assert priced.plans_in_use == [101]


def test_guard_refuses_when_most_rows_matched_last_time_match_nothing() -> None:
    """Three of four rows that matched at the last good run are gone from Hostwinds: refused.
    Without a last good run to compare with (or when changes are accepted) nothing is refused."""
    rows = [row(n, matched_before=True) for n in (1, 2, 3, 4)]
    matched = phases.match(listed(rows, [inst(1)]), {})
    last = LastRun(uuid.uuid4(), T0 - timedelta(hours=1), [101])
    refusal = phases.unmatched_refusal(matched, last, settings().guard)
    assert refusal is not None
    assert (refusal.seen, refusal.lost, refusal.ratio) == (4, 3, Decimal("0.75"))
    assert phases.unmatched_refusal(matched, None, settings().guard) is None


def test_guard_refuses_when_the_price_list_lost_the_plans_in_use() -> None:
    last = LastRun(uuid.uuid4(), T0 - timedelta(hours=1), [101, 102, 103])
    gone = phases.plans_refusal(last, phases.Fetched(price_lists=LISTS), settings().guard)
    assert gone is not None
    assert gone.lost == 2
    full = {(False, "ssd"): {101: PLAN_101, 102: PLAN_101, 103: PLAN_101}}
    assert phases.plans_refusal(last, phases.Fetched(price_lists=full), settings().guard) is None


def change(old: str, new: str, source: PriceSource = PriceSource.PRICE_LIST) -> RowOutcome:
    the_row = VpsRow(uuid.uuid4(), "1", "active", Decimal(old))
    return RowOutcome(the_row, inst(1), Estimate(Decimal(new), source))


def test_hold_keeps_a_tenfold_hostwinds_change_for_a_person_and_applies_an_override() -> None:
    tenfold, override, small = (
        change("9.99", "99.90"),
        change("9.99", "99.90", PriceSource.OVERRIDE),
        change("9.99", "10.99"),
    )
    outcomes = [tenfold, override, small]
    assert phases.changed_hostwinds_prices(outcomes) == [tenfold.row.id, small.row.id]
    held = phases.hold(outcomes, {}, settings().guard, accept=False)
    assert [h.row_id for h in held] == [tenfold.row.id]
    assert phases.hold(outcomes, {}, settings().guard, accept=True) == []


def test_hold_compares_with_the_drift_anchor_only_while_the_window_is_on() -> None:
    """10.99 from 9.99 is a small step, but from an approved 4.99 it has more than doubled."""
    small = change("9.99", "10.99")
    references = {small.row.id: Reference(anchor=Decimal("4.99"), anchor_approved=True)}
    assert len(phases.hold([small], references, settings().guard, accept=False)) == 1
    off = settings(guard={"drift_window_days": 0}).guard
    assert phases.hold([small], references, off, accept=False) == []


def test_cache_report_counts_asks_by_reason_only_for_services_answered() -> None:
    """Three asked (two new, one stale), one pending: the pending one is not counted as asked."""
    matched = phases.match(listed([row(n) for n in (1, 2, 3, 4)], [inst(n) for n in (1, 2, 3, 4)]), {})
    cached = {1: observed(inst(1), T0), 4: observed(inst(4), T0 - timedelta(days=60))}
    plan = phases.decide(matched, cached, settings(), now=T0, full=False, provisional_seconds=10).plan
    fetched = phases.Fetched(
        answers={2: observed(inst(2), T0)},
        failed={4: (Fallback.CYCLE_PRICES_UNREADABLE, "not JSON")},
        pending=[3],
    )
    cache = phases.cache_report(plan, fetched)
    assert (cache.hits, cache.asked, cache.failed, cache.pending) == (1, 2, 1, 1)
    assert cache.reasons == {"forced": 0, "changed": 0, "new": 1, "stale": 1}
