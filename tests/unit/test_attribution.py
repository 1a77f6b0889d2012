"""The attribution rules: equal splits exact to the cent, idle capacity, and every VPS adding up."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cost_sync.domain.attribution import (
    Allocation,
    Assignment,
    Ip,
    Rules,
    Vps,
    allocate,
    is_unpriced,
    snapshot_lines,
    split,
    why_unpriced,
)
from tests.unit import attribution_reference as reference

D = Decimal


def vps(name: str, cost: str | None, *, unpriced: bool = False) -> Vps:
    """A VPS in scope named ``name`` (its id too)."""
    return Vps(
        id=name,
        hostwinds_instance_id=name,
        status="active",
        approximate_cost=None if cost is None else D(cost),
        unpriced=unpriced,
    )


def shares(allocation: Allocation, vps_id: str) -> dict[str | None, tuple[Decimal | None, Decimal, int]]:
    """tenant (None: unallocated) -> (vps_cost, ip_cost, ip_count) for one VPS."""
    (found,) = [a for a in allocation.vps if a.vps.id == vps_id]
    return {line.tenant_id: (line.vps_cost, line.ip_cost, line.ip_count) for line in found.lines}


def test_split_gives_left_over_cents_to_the_lowest_keys() -> None:
    """$10.00 over three: 3.34, 3.33, 3.33, the extra cent to the first key in ascending order."""
    assert split(D("10.00"), ["c", "a", "b"]) == {"a": D("3.34"), "b": D("3.33"), "c": D("3.33")}
    assert split(D("0.02"), ["z", "y", "x"]) == {"x": D("0.01"), "y": D("0.01"), "z": D("0.00")}


def test_split_of_trailing_zeros_is_in_cents_and_finer_amounts_in_their_own_unit() -> None:
    """4.9900 splits like 4.99; an amount in tenths of a cent keeps its precision and its sum."""
    assert split(D("4.9900"), ["a", "b"]) == {"a": D("2.50"), "b": D("2.49")}
    parts = split(D("0.005"), ["a", "b"])
    assert parts == {"a": D("0.003"), "b": D("0.002")}


def test_split_refuses_nothing_and_duplicates() -> None:
    """Splitting over no key or over a repeated key is a programming error, not a silent loss."""
    with pytest.raises(ValueError, match="nothing"):
        split(D("1.00"), [])
    with pytest.raises(ValueError, match="distinct"):
        split(D("1.00"), ["a", "a"])


def test_shared_vps_three_tenants_over_two_ips() -> None:
    """$10.01 over two IPs (5.01, 5.00); IP a to tenants t1, t2 (2.51, 2.50), IP b to t3 (5.00)."""
    allocation = allocate(
        [vps("v", "10.01")],
        [Ip("a", "v", "active"), Ip("b", "v", "active")],
        [
            Assignment("a", "t2", "active"),
            Assignment("a", "t1", "warming"),
            Assignment("b", "t3", "active"),
        ],
    )
    assert shares(allocation, "v") == {
        "t1": (D("2.51"), D("0"), 1),
        "t2": (D("2.50"), D("0"), 1),
        "t3": (D("5.00"), D("0"), 1),
        None: (D("0.00"), D("0"), 0),
    }


def test_idle_ip_counts_as_capacity_even_with_an_assignment() -> None:
    """An idle IP takes its equal share of the VPS, and that share is unallocated, not its tenant's."""
    allocation = allocate(
        [vps("v", "9.99")],
        [Ip("a", "v", "active"), Ip("b", "v", "idle")],
        [Assignment("a", "t1", "active"), Assignment("b", "t2", "active")],
    )
    assert shares(allocation, "v") == {"t1": (D("5.00"), D("0"), 1), None: (D("4.99"), D("0"), 1)}


def test_vps_without_ips_and_ip_without_takers_are_unallocated() -> None:
    """No IP: the whole cost is unallocated; an IP whose only assignment is paused: its share too."""
    allocation = allocate(
        [vps("bare", "7.00"), vps("v", "6.00")],
        [Ip("a", "v", "active"), Ip("b", "v", "active")],
        [Assignment("a", "t1", "active"), Assignment("b", "t1", "paused")],
    )
    assert shares(allocation, "bare") == {None: (D("7.00"), D("0"), 0)}
    assert shares(allocation, "v") == {"t1": (D("3.00"), D("0"), 1), None: (D("3.00"), D("0"), 1)}
    assert allocation.unallocated_vps_cost == D("10.00")


def test_assignment_statuses_are_a_setting() -> None:
    """With only 'active' counting, a warming assignment leaves its IP's share unallocated."""
    ips = [Ip("a", "v", "active")]
    assignments = [Assignment("a", "t1", "warming")]
    strict = allocate([vps("v", "4.00")], ips, assignments, Rules(assignment_statuses=frozenset({"active"})))
    assert shares(strict, "v") == {None: (D("4.00"), D("0"), 1)}
    default = allocate([vps("v", "4.00")], ips, assignments)
    assert shares(default, "v")["t1"] == (D("4.00"), D("0"), 1)


def test_tenant_with_several_domains_on_one_ip_is_one_taker() -> None:
    """Two domains of one tenant on an IP do not give that tenant two shares."""
    allocation = allocate(
        [vps("v", "3.00")],
        [Ip("a", "v", "active")],
        [Assignment("a", "t1", "active"), Assignment("a", "t1", "active"), Assignment("a", "t2", "active")],
    )
    assert shares(allocation, "v") == {
        "t1": (D("1.50"), D("0"), 1),
        "t2": (D("1.50"), D("0"), 1),
        None: (D("0.00"), D("0"), 0),
    }


def test_tenant_on_several_vps_sums_its_shares() -> None:
    """A tenant's totals add its shares of each VPS it uses, and count those VPS and IPs."""
    allocation = allocate(
        [vps("v1", "4.99"), vps("v2", "12.00", unpriced=True)],
        [Ip("a", "v1", "active"), Ip("b", "v2", "active"), Ip("c", "v2", "active")],
        [Assignment("a", "t1", "active"), Assignment("b", "t1", "active"), Assignment("c", "t2", "active")],
    )
    (t1, t2) = allocation.by_tenant()
    assert (t1.tenant_id, t1.vps_cost, t1.vps_count, t1.ip_count, t1.unpriced_vps) == (
        "t1",
        D("10.99"),
        2,
        2,
        1,
    )
    assert (t2.tenant_id, t2.vps_cost, t2.vps_count, t2.ip_count, t2.unpriced_vps) == (
        "t2",
        D("6.00"),
        1,
        1,
        1,
    )


def test_ip_cost_is_attributed_like_the_vps_cost_and_unknown_ip_cost_is_not_zero() -> None:
    """Each IP's own cost goes to its tenants (or unallocated); an IP without a cost adds nothing."""
    allocation = allocate(
        [vps("v", "10.00")],
        [Ip("a", "v", "active", D("4.99")), Ip("b", "v", "idle", D("4.99")), Ip("c", "v", "active", None)],
        [Assignment("a", "t1", "active"), Assignment("a", "t2", "active")],
        has_ip_cost=True,
    )
    assert shares(allocation, "v") == {
        "t1": (D("1.67"), D("2.50"), 1),
        "t2": (D("1.67"), D("2.49"), 1),
        None: (D("6.66"), D("4.99"), 2),
    }
    assert allocation.fleet_monthly_total == D("19.98")
    assert allocation.ips_without_cost == 1


def test_vps_with_no_value_is_unknown_never_zero() -> None:
    """A NULL approximate_cost gives its tenants no amount (None), adds nothing to totals, and is flagged."""
    allocation = allocate(
        [vps("v", None, unpriced=True)], [Ip("a", "v", "active")], [Assignment("a", "t1", "active")]
    )
    assert shares(allocation, "v") == {"t1": (None, D("0"), 1), None: (None, D("0"), 0)}
    assert allocation.fleet_monthly_total == D("0")
    assert [v.id for v in allocation.unpriced] == ["v"]


def test_ips_of_vps_out_of_scope_are_ignored() -> None:
    """An IP on a VPS not in scope (decommissioned) contributes nothing, its tenant no VPS."""
    allocation = allocate(
        [vps("v", "1.00")], [Ip("x", "gone", "active", D("4.99"))], [Assignment("x", "t", "active")]
    )
    assert allocation.by_tenant() == []
    assert allocation.fleet_monthly_total == D("1.00")


@pytest.mark.parametrize(
    ("stored", "last_written", "last_run", "why"),
    [
        ("4.99", "4.99", None, None),
        ("4.99", None, None, "never priced by cost-sync"),  # the migration's default or a hand value
        ("4.99", "5.99", None, "changed since cost-sync wrote it"),  # by someone else
        (None, None, None, "no value"),
        (None, "4.99", "not_found", "no value"),
        # Priced once, then a run could not price it: the value is a kept one, perhaps out of date.
        ("4.99", "4.99", "not_found", "the last run could not price it (not_found)"),
        ("4.99", None, "unknown_cycle", "the last run could not price it (unknown_cycle)"),
    ],
)
def test_unpriced_means_not_a_current_price_cost_sync_wrote(
    stored: str | None, last_written: str | None, last_run: str | None, why: str | None
) -> None:
    """Priced only when the value is the latest cost-sync wrote and the last run priced the row."""
    args = (
        None if stored is None else D(stored),
        None if last_written is None else D(last_written),
        last_run,
    )
    assert why_unpriced(*args) == why
    assert is_unpriced(*args) is (why is not None)


def test_snapshot_keeps_every_vps_and_only_meaningful_unallocated_lines() -> None:
    """A fully taken VPS has no unallocated line; a VPS nobody takes has one even at $0.00."""
    allocation = allocate(
        [vps("full", "2.00"), vps("zero", "0.00")],
        [Ip("a", "full", "active")],
        [Assignment("a", "t", "active")],
    )
    lines = [(line.vps_instance_id, line.tenant_id) for line in snapshot_lines(allocation)]
    assert lines == [("full", "t"), ("zero", None)]


# --- property: for random fleets, every VPS's lines add up to its cost, to the cent ----------------

amounts = st.decimals(min_value=0, max_value=D("999999.99"), places=2, allow_nan=False, allow_infinity=False)
ip_statuses = st.sampled_from(["active", "warming", "idle", "blacklisted"])
assignment_statuses = st.sampled_from(["active", "warming", "paused", "inactive"])


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Vps], list[Ip], list[Assignment]]:
    """A random fleet: VPS (some without a value), IPs on them, tenants assigned to the IPs."""
    n_vps = draw(st.integers(1, 6))
    fleet = [
        Vps(f"v{i}", None, "active", draw(st.none() | amounts), draw(st.booleans())) for i in range(n_vps)
    ]
    ips = [
        Ip(f"ip{j}", f"v{draw(st.integers(0, n_vps - 1))}", draw(ip_statuses), draw(st.none() | amounts))
        for j in range(draw(st.integers(0, 10)))
    ]
    assignments = [
        Assignment(
            f"ip{draw(st.integers(0, len(ips) - 1))}",
            f"t{draw(st.integers(0, 6))}",
            draw(assignment_statuses),
        )
        for _ in range(draw(st.integers(0, 25) if ips else st.just(0)))
    ]
    return fleet, ips, assignments


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_every_vps_adds_up_to_its_cost_exactly(fleet: tuple[list[Vps], list[Ip], list[Assignment]]) -> None:
    """Per VPS, the lines' vps_cost add up to its cost and ip_cost to its IPs' costs; the fleet balances."""
    vps_rows, ips, assignments = fleet
    allocation = allocate(vps_rows, ips, assignments, has_ip_cost=True)
    assert len(allocation.vps) == len(vps_rows)
    for a in allocation.vps:
        ip_costs = sum((ip.approximate_cost or D(0) for ip in ips if ip.vps_instance_id == a.vps.id), D(0))
        assert sum((line.ip_cost for line in a.lines), D(0)) == ip_costs
        if a.vps.approximate_cost is None:
            assert all(line.vps_cost is None for line in a.lines)
        else:
            assert sum((line.vps_cost or D(0) for line in a.lines), D(0)) == a.vps.approximate_cost
            assert all(line.vps_cost is not None and line.vps_cost >= 0 for line in a.lines)
        assert all(
            line.vps_cost is None or line.vps_cost == line.vps_cost.quantize(D("0.01")) for line in a.lines
        )
    total = sum((v.approximate_cost or D(0) for v in vps_rows), D(0)) + sum(
        (ip.approximate_cost or D(0) for ip in ips), D(0)
    )
    assert allocation.fleet_monthly_total == total
    assert allocation.allocated + allocation.unallocated_vps_cost + allocation.unallocated_ip_cost == total
    assert sum((line.total for line in snapshot_lines(allocation)), D(0)) == total


# --- the fast allocation gives exactly what a straightforward Decimal reference gives ---------------

# Whole cents (the fast integer path), finer amounts and other spellings (4.9900, 5) that take the
# Decimal path, and negative amounts: each must give the reference's lines, exponents included.
any_amounts = (
    amounts
    | st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False)
    | st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False, allow_infinity=False)
    | st.sampled_from([D("4.9900"), D("5"), D("0.010"), D("1E+1"), D("0.00"), D("-0.01")])
)


@st.composite
def mixed_fleets(draw: st.DrawFn) -> tuple[list[Vps], list[Ip], list[Assignment]]:
    """Like ``fleets``, with any amounts and more sharing."""
    n_vps = draw(st.integers(1, 5))
    fleet = [
        Vps(f"v{i}", None, "active", draw(st.none() | any_amounts), draw(st.booleans())) for i in range(n_vps)
    ]
    ips = [
        Ip(f"ip{j}", f"v{draw(st.integers(0, n_vps))}", draw(ip_statuses), draw(st.none() | any_amounts))
        for j in range(draw(st.integers(0, 12)))
    ]
    assignments = [
        Assignment(
            f"ip{draw(st.integers(0, len(ips)))}", f"t{draw(st.integers(0, 7))}", draw(assignment_statuses)
        )
        for _ in range(draw(st.integers(0, 30)))
    ]
    return fleet, ips, assignments


def spelled(allocation: Allocation) -> list[tuple[object, ...]]:
    """Every field of every line and VPS, Decimals as their text (so 4.99 and 4.990 differ)."""

    def text(value: object) -> object:
        return str(value) if isinstance(value, Decimal) else value

    return [
        (
            a.vps.id,
            text(a.ip_cost),
            a.ip_count,
            *(tuple(text(getattr(line, f)) for f in line._fields) for line in a.lines),
        )
        for a in allocation.vps
    ]


@settings(max_examples=500, deadline=None)
@given(mixed_fleets(), st.booleans())
def test_allocation_equals_the_decimal_reference(
    fleet: tuple[list[Vps], list[Ip], list[Assignment]], has_ip_cost: bool
) -> None:
    """allocate() and the reference agree on every line, amount, count and Decimal's spelling."""
    vps_rows, ips, assignments = fleet
    rules = Rules(assignment_statuses=frozenset({"active", "warming"}), idle_ip_statuses=frozenset({"idle"}))
    fast = allocate(vps_rows, ips, assignments, rules, has_ip_cost=has_ip_cost)
    slow = reference.allocate(vps_rows, ips, assignments, rules, has_ip_cost=has_ip_cost)
    assert fast == slow
    assert spelled(fast) == spelled(slow)


def test_allocation_equals_the_reference_on_a_larger_fleet() -> None:
    """A few thousand VPS with shared IPs, idle ones, unknown costs and IP costs: the same lines."""
    fleet = [
        Vps(f"v{i:05}", None, "active", None if i % 17 == 0 else D(499 + i % 1300) / 100, i % 11 == 0)
        for i in range(3000)
    ]
    ips = [
        Ip(f"ip{i:05}-{k}", f"v{i:05}", "idle" if (i + k) % 10 == 0 else "active", D(k) if k == 2 else None)
        for i in range(3000)
        for k in range(i % 4)
    ]
    assignments = [
        Assignment(ip.id, f"t{(n * 7 + j * 13) % 97:03}", "active" if j else "warming")
        for n, ip in enumerate(ips)
        for j in range(3)
    ]
    fast = allocate(fleet, ips, assignments, has_ip_cost=True)
    assert fast == reference.allocate(fleet, ips, assignments, has_ip_cost=True)
    assert spelled(fast) == spelled(reference.allocate(fleet, ips, assignments, has_ip_cost=True))
