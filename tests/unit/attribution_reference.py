"""A straightforward Decimal reference for tenant attribution, to compare the fast one with.

Every share is computed with Decimal arithmetic, amount by amount, exactly as the rules say:
equal splits by largest remainder in the amount's own smallest unit (at least the cent), left-over
units to the keys in ascending order. Slow, and obviously right; only the tests use it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal

from cost_sync.domain.attribution import (
    ZERO,
    Allocation,
    Assignment,
    Ip,
    Line,
    Rules,
    Vps,
    VpsAllocation,
)


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


def _allocate_vps(
    vps: Vps, ips: Sequence[Ip], tenants_by_ip: dict[str, list[str]], idle: Collection[str]
) -> VpsAllocation:
    takers = {ip.id: ([] if ip.status in idle else tenants_by_ip.get(ip.id, [])) for ip in ips}
    vps_share: defaultdict[str | None, Decimal] = defaultdict(lambda: ZERO)
    ip_share: defaultdict[str | None, Decimal] = defaultdict(lambda: ZERO)
    ip_count: defaultdict[str | None, int] = defaultdict(int)
    ip_total = ZERO

    def attribute(amount: Decimal, ip: Ip, into: defaultdict[str | None, Decimal]) -> None:
        tenants = takers[ip.id]
        if not tenants:
            into[None] += amount
            return
        for tenant, part in split(amount, tenants).items():
            into[tenant] += part

    for ip in ips:
        counted: list[str | None] = list(takers[ip.id]) or [None]
        for tenant in counted:
            ip_count[tenant] += 1
        if ip.approximate_cost is not None:
            ip_total += ip.approximate_cost
            attribute(ip.approximate_cost, ip, ip_share)
    cost = vps.approximate_cost
    if cost is not None:
        if ips:
            shares = split(cost, [ip.id for ip in ips])
            for ip in ips:
                attribute(shares[ip.id], ip, vps_share)
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
    in_scope = sorted(vps, key=lambda v: v.id)
    known = {v.id for v in in_scope}
    ips_by_vps: defaultdict[str, list[Ip]] = defaultdict(list)
    for ip in ips:
        if ip.vps_instance_id in known:
            ips_by_vps[ip.vps_instance_id].append(ip)
    tenants_by_ip = _tenants_by_ip(assignments, rules)
    allocations = tuple(
        _allocate_vps(
            v, sorted(ips_by_vps[v.id], key=lambda ip: ip.id), tenants_by_ip, rules.idle_ip_statuses
        )
        for v in in_scope
    )
    without_cost = sum(1 for v in in_scope for ip in ips_by_vps[v.id] if ip.approximate_cost is None)
    tenant_ids = tuple(sorted({line.tenant_id for a in allocations for line in a.tenants if line.tenant_id}))
    return Allocation(
        vps=allocations,
        ips_without_cost=without_cost if has_ip_cost else 0,
        has_ip_cost=has_ip_cost,
        tenant_ids=tenant_ids,
    )
