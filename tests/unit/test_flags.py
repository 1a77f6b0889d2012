"""Run flags and parse-boundary checks: duplicates, shared rows, swings, unstorable fields."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from cost_sync.domain import flags, matching
from cost_sync.domain.matching import price_rows
from cost_sync.domain.models import (
    Cycle,
    Estimate,
    Plan,
    PriceSource,
    RowOutcome,
    Unpriced,
    UnpricedReason,
    VpsRow,
    dropped_fields,
    parse_instance,
)


def row(hw_id: str, cost: str | None = None) -> VpsRow:
    return VpsRow(uuid.uuid4(), hw_id, "active", None if cost is None else Decimal(cost))


def test_identical_repeats_are_kept_once_and_differing_ones_are_conflicts() -> None:
    """An identical repeat is harmless; a twin with other data makes that service id conflicting."""
    a, b = parse_instance({"serviceid": 1, "product_id": 101}), parse_instance({"serviceid": 2})
    twin = parse_instance({"serviceid": 1, "product_id": 102})
    kept, conflicting = flags.conflicting_instances([a, b, b, twin])
    assert [i.serviceid for i in kept] == [1, 2]
    assert conflicting == {1}
    assert flags.conflicting_instances([a, b])[1] == set()


SHARED = "7f3c9a52-0000-4000-8000-000000000001"


def test_a_server_uuid_on_two_services_names_neither() -> None:
    """A server_uuid on services 1 and 2 matches no row keyed by it; their serviceids still match."""
    one = parse_instance(
        {"serviceid": 1, "server_uuid": SHARED, "product_id": 101, "billingcycle": "Monthly"}
    )
    two = parse_instance({"serviceid": 2, "server_uuid": SHARED.upper(), "product_id": 102})
    three = parse_instance({"serviceid": 3, "server_uuid": "7f3c9a52-0000-4000-8000-000000000003"})
    assert matching.shared_server_uuids([one, two, three]) == {SHARED: (1, 2)}
    # The same service listed twice with its own uuid is not a shared uuid.
    assert matching.shared_server_uuids([one, one, three]) == {}
    by_serviceid, by_uuid = matching.index_instances([one, two, three])
    assert SHARED not in by_uuid
    assert by_serviceid[1] is one
    outcomes = price_rows(
        [row(SHARED.upper(), "4.99"), row("1"), row("7f3c9a52-0000-4000-8000-000000000003")],
        [one, two, three],
        overrides={},
        cycle_prices={},
        price_lists={(False, None): {101: Plan(id=101, prices={Cycle.MONTHLY: "4.99"})}},
        managed=False,
    )
    keyed_by_uuid, keyed_by_serviceid, _ = (o.result for o in outcomes)
    assert outcomes[2].instance is three  # a server_uuid on one service still matches it
    assert isinstance(keyed_by_uuid, Unpriced)
    assert keyed_by_uuid.reason is UnpricedReason.DUPLICATE_INSTANCE
    assert "services 1, 2" in keyed_by_uuid.detail
    assert isinstance(keyed_by_serviceid, Estimate)
    assert keyed_by_serviceid.monthly == Decimal("4.99")
    raised = flags.result_flags(
        outcomes, instances_listed=3, shared={}, unused=[], conflicting=set(), shared_uuids={SHARED: (1, 2)}
    )
    (flag,) = [f for f in raised if f.kind == "shared_server_uuid"]
    assert "1 server_uuid(s) on more than one service id (services 1, 2)" in flag.message
    assert SHARED not in flag.message.lower()  # a Hostwinds value: only service ids are named


def test_rows_naming_one_instance_are_found() -> None:
    """Two rows matched to service 1 are reported together; a row alone is not."""
    one, two = parse_instance({"serviceid": 1}), parse_instance({"serviceid": 2})
    r1, r2, r3 = row("1"), row("01"), row("2")
    assert flags.shared_instances([(r1, one), (r2, one), (r3, two), (row("x"), None)]) == {1: [r1, r2]}


def test_unused_overrides_compare_trimmed_lower_case_ids() -> None:
    """An override naming a row (in any case, with spaces on the row) is used; others are listed."""
    rows = [row(" ABC "), row("7")]
    assert flags.unused_overrides({"abc": Decimal(1), "8": Decimal(1)}, rows) == ["8"]


@pytest.mark.parametrize(
    ("old", "new", "flagged"),
    [("1.00", "10.00", True), ("10.00", "5.00", True), ("10.00", "5.01", False), ("1.00", "9.99", False)],
)
def test_swings_of_x10_or_half_are_flagged(old: str, new: str, flagged: bool) -> None:
    """A change to x10 or more, or to half or less, of the old value is flagged; smaller ones are not."""
    outcome = RowOutcome(row("1", old), None, Estimate(Decimal(new), PriceSource.PRICE_LIST))
    raised = flags.result_flags([outcome], instances_listed=1, shared={}, unused=[], conflicting=set())
    assert [f.kind for f in raised] == (["price_swing"] if flagged else [])


def test_a_swing_the_guard_held_is_said_to_be_held() -> None:
    """The swing flag counts the swings the guard held, so the line does not read as applied."""
    swung = RowOutcome(row("1", "1.00"), None, Estimate(Decimal("10.00"), PriceSource.PRICE_LIST))
    other = RowOutcome(row("2", "1.00"), None, Estimate(Decimal("20.00"), PriceSource.PRICE_LIST))
    common: dict[str, Any] = {"instances_listed": 2, "shared": {}, "unused": [], "conflicting": set()}
    (applied,) = flags.result_flags([swung, other], **common)
    assert applied.message.endswith("(e.g. 1.00 -> 10.00)")
    (held,) = flags.result_flags([swung, other], held={swung.row.id}, **common)
    assert held.message.endswith("(e.g. 1.00 -> 10.00); 1 of them held for approval")


def test_missing_plans_flagged_only_when_most_rows_lack_them() -> None:
    """plan_not_found for most matched rows is flagged; for a few it is not."""
    inst = parse_instance({"serviceid": 1})
    missing = RowOutcome(row("1"), inst, Unpriced(UnpricedReason.PLAN_NOT_FOUND))
    priced = RowOutcome(row("2", "1.00"), inst, Estimate(Decimal("1.00"), PriceSource.PRICE_LIST))
    kinds = lambda outcomes: [  # noqa: E731
        f.kind
        for f in flags.result_flags(outcomes, instances_listed=2, shared={}, unused=[], conflicting=set())
    ]
    assert kinds([missing, missing, priced]) == ["plans_missing"]
    assert kinds([missing, priced, priced]) == []


@pytest.mark.parametrize(
    ("raw", "dropped"),
    [
        ({"product_id": 99999999999}, ["product_id"]),
        ({"product_id": "-2147483649"}, ["product_id"]),
        ({"product_id": 2147483647}, []),
        ({"product_name": "a\x00b"}, ["product_name"]),
        ({"product_name": "a\ud800b", "billingcycle": "Monthly\x00"}, ["billingcycle", "product_name"]),
        ({"server_uuid": "  "}, []),
    ],
)
def test_unstorable_fields_become_unknown_and_are_named(raw: dict[str, object], dropped: list[str]) -> None:
    """A value PostgreSQL cannot store is None on the Instance, and dropped_fields names it."""
    data = {"serviceid": 5, **raw}
    assert dropped_fields(data, parse_instance(data)) == dropped


@pytest.mark.parametrize("serviceid", [0, -1, 2**63, "99999999999999999999"])
def test_serviceid_out_of_bigint_range_is_refused(serviceid: object) -> None:
    """A service id that cannot be a BIGINT key fails validation (the run names item and field)."""
    with pytest.raises(ValidationError):
        parse_instance({"serviceid": serviceid})
