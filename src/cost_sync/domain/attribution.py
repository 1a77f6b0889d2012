"""Tenant attribution rules, pure: per VPS, the tenants' shares plus its unallocated share equal its cost.

A VPS's ``approximate_cost`` is split equally over its SMTP IPs; an IP whose status is idle keeps
its share as unallocated capacity; any other IP's share is split equally over the distinct tenants
with an assignment on it whose status counts; an IP nobody takes, and a VPS with no IP, is
unallocated. Each IP's own cost (when the platform has one) is attributed the same way, as a
separate ``ip_cost``. Every split is exact to the cent by largest remainder (ties in ascending id
order), so no cent is created or lost. No I/O, no clock: Decimal in, Decimal out.

Amounts in whole cents (``DECIMAL(8,2)``, every amount cost-sync writes) are split as integers of
cents and turned back into Decimal once per line; a VPS with any finer amount is split with
:func:`split` on Decimals. Both give the same lines (a property test compares them with a
straightforward Decimal reference).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import NamedTuple, TypeAlias

from cost_sync.domain.gc_pause import gc_paused

ZERO = Decimal("0.00")

#: One IP on a VPS as the allocation reads it: (id, status, its own cost or None, the distinct
#: tenants whose assignment on it counts, in ascending order).
IpRow: TypeAlias = tuple[str, str, Decimal | None, Sequence[str]]


@dataclass(frozen=True)
class Vps:
    """A ``vps_instances`` row in scope, and whether its stored value is a price cost-sync wrote."""

    id: str
    hostwinds_instance_id: str | None
    status: str
    approximate_cost: Decimal | None
    unpriced: bool
    #: Why it is unpriced, for people (:func:`why_unpriced`); None when it is priced.
    why: str | None = None


@dataclass(frozen=True)
class Ip:
    """An ``smtp_ip_addresses`` row on a VPS in scope; ``approximate_cost`` None when unknown or absent."""

    id: str
    vps_instance_id: str
    status: str
    approximate_cost: Decimal | None = None


@dataclass(frozen=True)
class Assignment:
    """A tenant's domain assigned to an IP, with the assignment's status."""

    ip_id: str
    tenant_id: str
    status: str


@dataclass(frozen=True)
class Rules:
    """Which assignment statuses give a tenant a share, and which IP statuses are idle capacity."""

    assignment_statuses: frozenset[str] = frozenset({"active", "warming"})
    idle_ip_statuses: frozenset[str] = frozenset({"idle"})


class Line(NamedTuple):
    """One VPS's share for one tenant (``tenant_id`` None: the VPS's unallocated share).

    ``vps_cost`` is None when the VPS's cost is unknown (NULL): never counted as zero.
    ``ip_count`` is the VPS's IPs this tenant takes (unallocated: the IPs no tenant takes).
    Immutable; a named tuple because a fleet has hundreds of thousands of them.
    """

    vps_instance_id: str
    tenant_id: str | None
    vps_cost: Decimal | None
    ip_cost: Decimal
    ip_count: int
    unpriced: bool

    @property
    def total(self) -> Decimal:
        """vps_cost + ip_cost, an unknown vps_cost adding nothing."""
        return (self.vps_cost or ZERO) + self.ip_cost


@dataclass(frozen=True)
class TenantTotal:
    """One tenant's sums over every VPS it uses."""

    tenant_id: str
    vps_cost: Decimal
    ip_cost: Decimal
    vps_count: int
    ip_count: int
    unpriced_vps: int

    @property
    def total(self) -> Decimal:
        """vps_cost + ip_cost."""
        return self.vps_cost + self.ip_cost


@dataclass(frozen=True)
class VpsAllocation:
    """How one VPS's cost (and its IPs' costs) landed: one line per tenant, one unallocated line."""

    vps: Vps
    ip_count: int
    ip_cost: Decimal
    tenants: tuple[Line, ...]
    unallocated: Line

    @property
    def lines(self) -> tuple[Line, ...]:
        """The tenants' lines, then the unallocated one."""
        return (*self.tenants, self.unallocated)

    @property
    def has_unallocated(self) -> bool:
        """Whether the unallocated line holds something (an amount, an idle IP) or no tenant takes
        any of the VPS: then it is reported and stored, so every VPS in scope appears."""
        rest = self.unallocated
        return not self.tenants or bool(rest.ip_count or rest.ip_cost or (rest.vps_cost or ZERO))


@dataclass(frozen=True)
class Allocation:
    """The whole fleet's attribution, per VPS in a stable order."""

    vps: tuple[VpsAllocation, ...]
    ips_without_cost: int = 0
    has_ip_cost: bool = False
    tenant_ids: tuple[str, ...] = field(default=())

    def by_tenant(self) -> list[TenantTotal]:
        """Each tenant's sums, in ascending tenant id order."""
        vps_cost: defaultdict[str, Decimal] = defaultdict(lambda: ZERO)
        ip_cost: defaultdict[str, Decimal] = defaultdict(lambda: ZERO)
        vps_count: defaultdict[str, int] = defaultdict(int)
        ip_count: defaultdict[str, int] = defaultdict(int)
        unpriced: defaultdict[str, int] = defaultdict(int)
        for allocation in self.vps:
            for line in allocation.tenants:
                assert line.tenant_id is not None
                tenant = line.tenant_id
                vps_cost[tenant] += line.vps_cost or ZERO
                ip_cost[tenant] += line.ip_cost
                vps_count[tenant] += 1
                ip_count[tenant] += line.ip_count
                unpriced[tenant] += line.unpriced
        return [
            TenantTotal(t, vps_cost[t], ip_cost[t], vps_count[t], ip_count[t], unpriced[t])
            for t in sorted(vps_count)
        ]

    @property
    def unallocated_vps_cost(self) -> Decimal:
        """The VPS cost no tenant takes, over the fleet."""
        return sum((a.unallocated.vps_cost or ZERO for a in self.vps), ZERO)

    @property
    def unallocated_ip_cost(self) -> Decimal:
        """The IP cost no tenant takes, over the fleet."""
        return sum((a.unallocated.ip_cost for a in self.vps), ZERO)

    @property
    def allocated(self) -> Decimal:
        """What the tenants take, over the fleet."""
        return sum((line.total for a in self.vps for line in a.tenants), ZERO)

    @property
    def fleet_monthly_total(self) -> Decimal:
        """Every known VPS cost plus every known IP cost in scope, summed from the inputs."""
        vps = sum((a.vps.approximate_cost or ZERO for a in self.vps), ZERO)
        return vps + sum((a.ip_cost for a in self.vps), ZERO)

    @property
    def unpriced(self) -> list[Vps]:
        """The VPS in scope whose value is not a price cost-sync wrote (counted with that value)."""
        return [a.vps for a in self.vps if a.vps.unpriced]


def is_unpriced(
    approximate_cost: Decimal | None, last_written: Decimal | None, last_run_reason: str | None = None
) -> bool:
    """True when the stored value is not a current price cost-sync wrote (or there is no value).

    ``last_written`` is the ``new_cost`` of the VPS's latest ``cost_sync_history`` row: a row cost-sync
    never priced, or whose value someone else changed since, is unpriced. ``last_run_reason`` is why
    the last run that decided the row could not price it (``cost_sync_row_state``): its value is
    then a kept one, perhaps out of date.
    """
    return why_unpriced(approximate_cost, last_written, last_run_reason) is not None


def why_unpriced(
    approximate_cost: Decimal | None, last_written: Decimal | None, last_run_reason: str | None = None
) -> str | None:
    """Why a VPS's stored value is not a current cost-sync price, in a few words; None when it is."""
    if approximate_cost is None:
        return "no value"
    if last_run_reason is not None:
        return f"the last run could not price it ({last_run_reason})"
    if last_written is None:
        return "never priced by cost-sync"
    if last_written != approximate_cost:
        return "changed since cost-sync wrote it"
    return None


def split(amount: Decimal, keys: Sequence[str]) -> dict[str, Decimal]:
    """``amount`` split equally over ``keys``, exact to the cent: the parts add up to ``amount``.

    Largest remainder: every part gets the floor of the equal share in cents, and the cents left
    over go one each to the keys in ascending order (all remainders are equal, so the tie-break
    decides). An amount with finer precision than cents is split in its own smallest unit.
    """
    if not keys:
        raise ValueError("cannot split over nothing")
    ordered = sorted(keys)
    if len(set(ordered)) != len(ordered):
        raise ValueError("keys must be distinct")
    if not amount.is_finite():
        raise ValueError("cannot split a non-finite amount")
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -2:
        # Trailing zeros (4.9900) do not make an amount finer than cents.
        exponent = int(amount.normalize().as_tuple().exponent)
    places = max(2, -exponent)
    # scaleb is exact: the amount as a whole number of its smallest unit.
    units = int(amount.scaleb(places))
    base, left = divmod(units, len(ordered))
    return {key: Decimal(base + (1 if i < left else 0)).scaleb(-places) for i, key in enumerate(ordered)}


def _tenants_by_ip(assignments: Iterable[Assignment], rules: Rules) -> dict[str, list[str]]:
    found: defaultdict[str, set[str]] = defaultdict(set)
    for a in assignments:
        if a.status in rules.assignment_statuses:
            found[a.ip_id].add(a.tenant_id)
    return {ip: sorted(tenants) for ip, tenants in found.items()}


def _allocate_vps(vps: Vps, ips: Sequence[IpRow], idle: Collection[str]) -> VpsAllocation:
    """One VPS split with :func:`split` on Decimals: any amount, in its own smallest unit."""
    takers = {ip_id: ([] if status in idle else list(tenants)) for ip_id, status, _, tenants in ips}
    vps_share: defaultdict[str | None, Decimal] = defaultdict(lambda: ZERO)
    ip_share: defaultdict[str | None, Decimal] = defaultdict(lambda: ZERO)
    ip_count: defaultdict[str | None, int] = defaultdict(int)
    ip_total = ZERO

    def attribute(amount: Decimal, ip_id: str, into: defaultdict[str | None, Decimal]) -> None:
        tenants = takers[ip_id]
        if not tenants:
            into[None] += amount
            return
        for tenant, part in split(amount, tenants).items():
            into[tenant] += part

    for ip_id, _, ip_cost, _ in ips:
        counted: list[str | None] = list(takers[ip_id]) or [None]
        for tenant in counted:
            ip_count[tenant] += 1
        if ip_cost is not None:
            ip_total += ip_cost
            attribute(ip_cost, ip_id, ip_share)
    cost = vps.approximate_cost
    if cost is not None:
        if ips:
            shares = split(cost, [ip[0] for ip in ips])
            for ip_id, *_ in ips:
                attribute(shares[ip_id], ip_id, vps_share)
        else:
            vps_share[None] += cost
    tenant_ids = sorted({t for ts in takers.values() for t in ts})
    lines = tuple(
        Line(
            vps_instance_id=vps.id,
            tenant_id=tenant,
            vps_cost=vps_share[tenant] if cost is not None else None,
            ip_cost=ip_share[tenant],
            ip_count=ip_count[tenant],
            unpriced=vps.unpriced,
        )
        for tenant in tenant_ids
    )
    unallocated = Line(
        vps_instance_id=vps.id,
        tenant_id=None,
        vps_cost=vps_share[None] if cost is not None else None,
        ip_cost=ip_share[None],
        ip_count=ip_count[None],
        unpriced=vps.unpriced,
    )
    return VpsAllocation(vps=vps, ip_count=len(ips), ip_cost=ip_total, tenants=lines, unallocated=unallocated)


class _Cents(dict[int, Decimal]):
    """Integer cents -> Decimal with exponent -2 (as :func:`split` writes them), made once each."""

    def __missing__(self, cents: int) -> Decimal:
        value = self[cents] = Decimal(cents).scaleb(-2)
        return value


class _FinerThanCents(Exception):
    """An amount to split has a part finer than a cent: the VPS goes through the Decimal path."""


def _cents_of(amount: Decimal) -> int:
    """``amount`` as a whole number of cents; _FinerThanCents when it is not one (4.995)."""
    scaled = amount * 100
    units = int(scaled)
    if units != scaled:
        raise _FinerThanCents
    return units


_NOBODY: tuple[None] = (None,)
_new_line = tuple.__new__


def _allocate_vps_in_cents(
    vps: Vps, ips: Sequence[IpRow], idle: Collection[str], cents: _Cents
) -> VpsAllocation:
    """One VPS split as integers of cents: the lines _allocate_vps gives, Decimal for Decimal.

    Largest remainder in integers: ``divmod`` gives every key the floor and the first ``left`` keys
    (ids ascending) one cent more, exactly what :func:`split` does. What the Decimal path adds
    without splitting (a VPS without IPs, an IP cost nobody takes, the IPs' total) is added as
    Decimal here too, so even the amounts' exponents are the same. Raises _FinerThanCents.
    """
    cost = vps.approximate_cost
    priced = cost is not None
    vps_cents: dict[str | None, int] = {}
    counts: dict[str | None, int] = {}
    ip_cents: dict[str | None, int] = {}
    ip_rest = ip_total = ZERO
    base = left = 0
    if priced and ips:
        base, left = divmod(_cents_of(cost), len(ips))  # type: ignore[arg-type]  # priced
    for i, (_, status, ip_cost, tenants) in enumerate(ips):
        takers: Sequence[str | None] = _NOBODY if not tenants or status in idle else tenants
        share = base + 1 if i < left else base
        n = len(takers)
        if n == 1:
            taker = takers[0]
            counts[taker] = counts.get(taker, 0) + 1
            vps_cents[taker] = vps_cents.get(taker, 0) + share
        else:
            each, extra = divmod(share, n)
            for j, taker in enumerate(takers):
                counts[taker] = counts.get(taker, 0) + 1
                vps_cents[taker] = vps_cents.get(taker, 0) + (each + 1 if j < extra else each)
        if ip_cost is not None:
            ip_total += ip_cost
            if takers is _NOBODY:
                ip_rest += ip_cost
            else:
                each, extra = divmod(_cents_of(ip_cost), n)
                for j, taker in enumerate(takers):
                    ip_cents[taker] = ip_cents.get(taker, 0) + (each + 1 if j < extra else each)
    rest_count = counts.pop(None, 0)
    rest_cents = vps_cents.pop(None, 0)
    unpriced = vps.unpriced
    vid = vps.id
    zero = cents[0]
    lines = tuple(
        [
            _new_line(
                Line,
                (
                    vid,
                    tenant,
                    cents[vps_cents[tenant]] if priced else None,
                    cents[ip_cents[tenant]] if tenant in ip_cents else zero,
                    counts[tenant],
                    unpriced,
                ),
            )
            for tenant in sorted(counts)  # type: ignore[type-var]  # None was popped
        ]
    )
    if not priced:
        rest_vps = None
    elif ips:
        rest_vps = cents[rest_cents]
    else:
        rest_vps = ZERO + cost  # type: ignore[operator]  # priced
    unallocated = _new_line(Line, (vid, None, rest_vps, ip_rest, rest_count, unpriced))
    allocation = object.__new__(VpsAllocation)
    # The frozen dataclass's fields, set without its per-field object.__setattr__.
    allocation.__dict__.update(
        vps=vps, ip_count=len(ips), ip_cost=ip_total, tenants=lines, unallocated=unallocated
    )
    return allocation


_FIRST = itemgetter(0)


def allocate_rows(
    vps: Iterable[Vps],
    ips_by_vps: Mapping[str, Sequence[IpRow]],
    idle_ip_statuses: Collection[str],
    *,
    has_ip_cost: bool = False,
) -> Allocation:
    """:func:`allocate` over IPs already grouped by VPS, each with its counted tenants (see IpRow).

    What :mod:`cost_sync.store.attribution` reads from PostgreSQL. IPs of VPS not in ``vps`` are
    ignored; each IP's tenants must be distinct and in ascending order.
    """
    with gc_paused():
        return _allocate_rows(vps, ips_by_vps, frozenset(idle_ip_statuses), has_ip_cost)


def _allocate_rows(
    vps: Iterable[Vps], ips_by_vps: Mapping[str, Sequence[IpRow]], idle: frozenset[str], has_ip_cost: bool
) -> Allocation:
    cents = _Cents()
    allocations: list[VpsAllocation] = []
    tenant_ids: set[str] = set()
    without_cost = 0
    no_ips: Sequence[IpRow] = ()
    for v in sorted(vps, key=lambda v: v.id):
        ips = sorted(ips_by_vps.get(v.id, no_ips), key=_FIRST)
        try:
            allocation = _allocate_vps_in_cents(v, ips, idle, cents)
        except _FinerThanCents:
            allocation = _allocate_vps(v, ips, idle)
        allocations.append(allocation)
        tenant_ids.update([line.tenant_id for line in allocation.tenants])  # type: ignore[misc]
        if has_ip_cost:
            without_cost += sum(1 for ip in ips if ip[2] is None)
    return Allocation(
        vps=tuple(allocations),
        ips_without_cost=without_cost if has_ip_cost else 0,
        has_ip_cost=has_ip_cost,
        tenant_ids=tuple(sorted(tenant_ids)),
    )


def allocate(
    vps: Iterable[Vps],
    ips: Iterable[Ip],
    assignments: Iterable[Assignment],
    rules: Rules | None = None,
    *,
    has_ip_cost: bool = False,
) -> Allocation:
    """Attribute every VPS in ``vps`` (and the IPs on it) to tenants and to unallocated.

    IPs on a VPS not in ``vps`` and assignments on IPs not in ``ips`` are ignored: they are out of
    scope. ``has_ip_cost`` says whether the platform has a per-IP cost at all (reported, not used).
    """
    rules = rules or Rules()
    in_scope = list(vps)
    known = {v.id for v in in_scope}
    tenants_by_ip = _tenants_by_ip(assignments, rules)
    ips_by_vps: defaultdict[str, list[IpRow]] = defaultdict(list)
    for ip in ips:
        if ip.vps_instance_id in known:
            ips_by_vps[ip.vps_instance_id].append(
                (ip.id, ip.status, ip.approximate_cost, tenants_by_ip.get(ip.id, []))
            )
    return allocate_rows(in_scope, ips_by_vps, rules.idle_ip_statuses, has_ip_cost=has_ip_cost)


def snapshot_lines(allocation: Allocation) -> list[Line]:
    """The lines a snapshot stores: every tenant line, and each unallocated line that
    :attr:`VpsAllocation.has_unallocated`; per VPS they add up to its cost."""
    lines: list[Line] = []
    for vps in allocation.vps:
        lines += vps.tenants
        if vps.has_unallocated:
            lines.append(vps.unallocated)
    return lines


@dataclass(frozen=True)
class Report:
    """An allocation with what a reader needs beside it: tenant names, scope, and when it was made."""

    allocation: Allocation
    tenant_names: dict[str, str | None]
    statuses: tuple[str, ...]
    generated_at: datetime
