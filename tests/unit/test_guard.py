"""Pure guard decisions: which changes are held, when a run is refused, when an approval is stale."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import pytest

from cost_sync.domain import guard
from cost_sync.domain.models import (
    Cycle,
    Estimate,
    Instance,
    PriceSource,
    RowOutcome,
    RowState,
    Unpriced,
    UnpricedReason,
    VpsRow,
    changed_states,
)

LIMIT = Decimal("0.5")


def outcome(old: str | None, new: str, source: PriceSource = PriceSource.PRICE_LIST) -> RowOutcome:
    """A row holding ``old`` that a run prices at ``new``."""
    row = VpsRow(uuid.uuid4(), "1", "active", None if old is None else Decimal(old))
    est = Estimate(
        monthly=Decimal(new), source=source, cycle=Cycle.MONTHLY, cycle_price=Decimal(new), months=1
    )
    return RowOutcome(row, Instance(serviceid=1), est)


def test_a_tenfold_change_is_held_with_its_ratio() -> None:
    """9.99 -> 99.90 is a change of 900%: held, with the ratio and a reason naming the limit."""
    [held] = guard.hold_changes([outcome("9.99", "99.90")], max_change_ratio=LIMIT)
    assert held.ratio == Decimal("9.0000")
    assert held.old == Decimal("9.99")
    assert held.proposed.monthly == Decimal("99.90")
    assert "max_change_ratio 0.5" in held.reason


@pytest.mark.parametrize(
    ("old", "new", "is_held"),
    [
        ("10.00", "15.00", False),  # exactly the limit: applied
        ("10.00", "15.01", True),
        ("10.00", "5.00", False),
        ("10.00", "4.99", True),
        ("10.00", "10.00", False),  # unchanged
    ],
)
def test_the_limit_is_inclusive_both_ways(old: str, new: str, is_held: bool) -> None:
    """A change of exactly max_change_ratio is applied; a cent more, up or down, is held."""
    assert bool(guard.hold_changes([outcome(old, new)], max_change_ratio=LIMIT)) is is_held


@pytest.mark.parametrize("old", [None, "0.00"])
def test_a_first_price_is_never_held(old: str | None) -> None:
    """A row without a previous value (null or zero) takes its first price however large."""
    assert guard.hold_changes([outcome(old, "999.99")], max_change_ratio=LIMIT) == []


def test_overrides_and_accepted_runs_are_never_held() -> None:
    """A Finance override is applied as configured; --accept-changes holds nothing."""
    assert guard.hold_changes([outcome("1.00", "50.00", PriceSource.OVERRIDE)], max_change_ratio=LIMIT) == []
    assert guard.hold_changes([outcome("1.00", "50.00")], max_change_ratio=LIMIT, accept=True) == []


def seen_row(matched: bool | None) -> VpsRow:
    """A row a run last saw matched (True), unmatched (False), or never saw (None)."""
    seen = None if matched is None else RowState(uuid.uuid4(), matched=matched).key()
    return VpsRow(uuid.uuid4(), "1", "active", Decimal("9.99"), seen=seen)


def test_unmatched_share_over_the_limit_refuses() -> None:
    """Three of ten rows that matched last time match nothing now: over 0.2, refused with the counts."""
    rows = [seen_row(True) for _ in range(10)]
    now = [(row, None if n < 3 else Instance(serviceid=n)) for n, row in enumerate(rows)]
    refusal = guard.check_unmatched(now, max_unmatched_ratio=Decimal("0.2"), last_run="run x")
    assert refusal is not None
    assert (refusal.seen, refusal.lost) == (10, 3)
    assert "3 of 10" in refusal.message
    assert "run x" in refusal.message
    now = [(row, None if n < 2 else Instance(serviceid=n)) for n, row in enumerate(rows)]
    assert guard.check_unmatched(now, max_unmatched_ratio=Decimal("0.2"), last_run="run x") is None


def test_rows_never_matched_or_new_do_not_count_as_lost() -> None:
    """Only rows that matched last time can be lost: new rows and known-unmatched rows are ignored."""
    now = [(seen_row(False), None), (seen_row(None), None), (seen_row(True), Instance(serviceid=1))]
    assert guard.check_unmatched(now, max_unmatched_ratio=Decimal("0.2"), last_run="r") is None


def test_price_list_losing_plans_in_use_refuses() -> None:
    """Two of five plans in use vanished from the price list: refused; one of five is allowed."""
    refusal = guard.check_plans([1, 2, 3, 4, 5], [1, 2, 3], max_unmatched_ratio=Decimal("0.2"), last_run="r")
    assert refusal is not None
    assert "4, 5" in refusal.message
    assert (
        guard.check_plans([1, 2, 3, 4, 5], [1, 2, 3, 4], max_unmatched_ratio=Decimal("0.2"), last_run="r")
        is None
    )
    assert guard.check_plans(None, [], max_unmatched_ratio=Decimal("0.2"), last_run="r") is None


def test_recheck_names_why_an_approval_is_stale() -> None:
    """An approval stands only while the row holds the old value and a run would still propose it."""
    now = Estimate(monthly=Decimal("99.90"), source=PriceSource.PRICE_LIST)
    args = {"old": Decimal("9.99"), "proposed": Decimal("99.90")}
    assert guard.recheck(**args, current=Decimal("9.99"), now=now) is None
    assert "not the held 99.90" in (
        guard.recheck(**args, current=Decimal("9.99"), now=Estimate(Decimal("9.99"), PriceSource.PRICE_LIST))
        or ""
    )
    assert "value is 12.00 now" in (guard.recheck(**args, current=Decimal("12.00"), now=now) or "")
    assert "not_found" in (
        guard.recheck(**args, current=Decimal("9.99"), now=Unpriced(UnpricedReason.NOT_FOUND, "gone")) or ""
    )
    assert "no longer in scope" in (guard.recheck(**args, current=None, now=None) or "")


def test_changed_states_skips_pending_and_unchanged_rows() -> None:
    """Only states that differ are written; a row the budget did not reach keeps its state."""
    priced = outcome("9.99", "9.99")
    pending = RowOutcome(
        VpsRow(uuid.uuid4(), "2", "active", None), Instance(serviceid=2), Unpriced(UnpricedReason.PENDING)
    )
    first = changed_states([priced, pending])
    assert [s.row_id for s in first] == [priced.row.id]
    seen = dataclasses.replace(priced.row, seen=first[0].key())
    assert changed_states([RowOutcome(seen, priced.instance, priced.result), pending]) == []
    upgraded = dataclasses.replace(priced.instance, upgrade_available=True)
    assert len(changed_states([RowOutcome(seen, upgraded, priced.result)])) == 1
