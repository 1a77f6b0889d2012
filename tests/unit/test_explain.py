"""Derivations: a recorded price and its months reproduce the stored value, with every rounding case."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cost_sync.domain import explain, pricing
from cost_sync.domain.models import Cycle, Estimate, Instance, Plan, PriceSource, Unpriced, UnpricedReason

AT = datetime(2026, 11, 1, tzinfo=UTC)


def entry(est: Estimate, new: Decimal | None = None) -> explain.HistoryRecord:
    """The history row a run would write for ``est`` (or a tampered ``new`` value)."""
    return explain.HistoryRecord(
        run_id=uuid.uuid4(),
        at=AT,
        old=None,
        new=est.monthly if new is None else new,
        source=est.source.value,
        cycle=est.cycle.value if est.cycle else None,
        cycle_price=est.cycle_price,
        months=est.months,
        hourly_ceiling=est.hourly_ceiling,
    )


@pytest.mark.parametrize(
    ("billingcycle", "hourly", "price", "quotient", "exact", "rounded"),
    [
        ("Monthly", False, "9.99", "9.99", True, "9.99"),
        ("Quarterly", False, "30.075", "10.025", True, "10.03"),  # half-up, where half-even gives 10.02
        ("Quarterly", False, "10.00", "3.33333333333333333333...", False, "3.33"),
        ("Semi-Annually", False, "56.94", "9.49", True, "9.49"),
        ("Annually", False, "119.00", "9.91666666666666666666...", False, "9.92"),
        ("Biennially", False, "203.76", "8.49", True, "8.49"),
        ("Triennially", False, "0.18", "0.005", True, "0.01"),  # half a cent rounds up
        ("Triennially", False, "359.64", "9.99", True, "9.99"),
        ("Monthly", True, "39.99", "39.99", True, "39.99"),  # hourly: the monthly ceiling
    ],
)
@pytest.mark.parametrize("source", ["cycle_prices", "price_list"])
def test_derivation_reproduces_the_stored_value(
    billingcycle: str, hourly: bool, price: str, quotient: str, exact: bool, rounded: str, source: str
) -> None:
    """What a run stores from either price source is recomputed exactly from its recorded basis."""
    instance = Instance(serviceid=1, product_id=101, billingcycle=billingcycle, hourly=hourly)
    priced = pricing.normalise_cycle(billingcycle, hourly=hourly)
    assert priced is not None
    cell_cycle = Cycle.MONTHLY if priced is Cycle.HOURLY else priced
    if source == "cycle_prices":
        est = pricing.estimate_instance(instance, cycle_prices={cell_cycle: price}, plan=None)
    else:
        est = pricing.estimate_instance(
            instance, cycle_prices=None, plan=Plan(id=101, prices={cell_cycle: price})
        )
    assert isinstance(est, Estimate)
    assert est.source.value == source
    derived = explain.derive(entry(est))
    assert derived["reproduces"] is True
    assert (derived["quotient"], derived["quotient_exact"], derived["rounded"]) == (quotient, exact, rounded)
    assert derived["new"] == rounded
    assert derived["hourly_ceiling"] is hourly


def test_override_derivation_is_the_configured_value() -> None:
    """An override needs no division: it reproduces itself and says so."""
    derived = explain.derive(entry(Estimate(monthly=Decimal("42.00"), source=PriceSource.OVERRIDE)))
    assert derived["reproduces"] is True
    assert derived["rounded"] == "42.00"
    assert "override" in derived["rule"]


def test_a_value_the_basis_does_not_give_is_flagged() -> None:
    """A stored value that differs from its recorded price and months does not reproduce."""
    est = Estimate(Decimal("9.92"), PriceSource.PRICE_LIST, Cycle.ANNUALLY, Decimal("119.00"), 12)
    assert explain.derive(entry(est, new=Decimal("9.91")))["reproduces"] is False


def test_compute_now_prices_from_the_cached_observation() -> None:
    """The fingerprint and cached prices give what a run would store; the cached price list prices the
    rest; without one, a price-list row says it cannot."""
    fp = "product_id=101;billingcycle=Semi-Annually;hourly=0;disk_type=ssd;managed=0"
    now = explain.compute_now(
        override=None, serviceid=7, prices={Cycle.SEMIANNUALLY: "56.94"}, fingerprint=fp
    )
    assert isinstance(now, Estimate)
    assert now.monthly == Decimal("9.49")
    assert now.source is PriceSource.CYCLE_PRICES
    empty = explain.compute_now(override=None, serviceid=7, prices={}, fingerprint=fp)
    assert isinstance(empty, Unpriced)
    assert empty.reason is UnpricedReason.PLAN_NOT_FOUND
    assert "no price list is cached" in empty.detail
    plans = {101: Plan(id=101, prices={Cycle.SEMIANNUALLY: "59.94"})}
    listed = explain.compute_now(override=None, serviceid=7, prices={}, fingerprint=fp, plans=plans)
    assert isinstance(listed, Estimate)
    assert (listed.monthly, listed.source) == (Decimal("9.99"), PriceSource.PRICE_LIST)
    # A cached list without the plan: plan_not_found, as a run would say it.
    gone = explain.compute_now(override=None, serviceid=7, prices={}, fingerprint=fp, plans={})
    assert isinstance(gone, Unpriced)
    assert gone.reason is UnpricedReason.PLAN_NOT_FOUND
    assert "no price list is cached" not in gone.detail
    override = explain.compute_now(override=Decimal("3.00"), serviceid=None, prices=None, fingerprint=None)
    assert isinstance(override, Estimate)
    assert override.monthly == Decimal("3.00")


def test_quote_prices_another_plan_and_cycle_from_the_price_list() -> None:
    """Plan 102 annually at 215.89 is 17.99 a month: 8.00 more than the current 9.99."""
    instance = Instance(serviceid=1, product_id=101, billingcycle="Monthly")
    plan = Plan(id=102, prices={Cycle.ANNUALLY: "215.89", Cycle.MONTHLY: "19.99"})
    q = explain.quote(instance, plan=plan, plan_id=102, cycle="annually", current=Decimal("9.99"))
    assert q.as_json()["monthly"] == "17.99"
    assert q.difference == Decimal("8.00")
    same_cycle = explain.quote(instance, plan=plan, plan_id=102, cycle=None, current=Decimal("9.99"))
    assert same_cycle.as_json()["monthly"] == "19.99"
    missing = explain.quote(instance, plan=None, plan_id=999, cycle=None, current=None)
    assert missing.as_json()["unpriced_reason"] == "plan_not_found"
