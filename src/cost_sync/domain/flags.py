"""What a run should tell an operator about before trusting it: pure checks, no I/O, no logging.

Each check returns :class:`Flag` values (a stable ``kind`` and one human line). A run puts them in
``RunReport.warnings`` and logs them; it does not hold the run back (a guard that does is separate).
Guarantees: duplicate Hostwinds service ids (and server_uuids shared by several) are found whatever
their order; every message is one line, names at most :data:`EXAMPLES` ids, and carries no value
copied from Hostwinds but numbers.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from cost_sync.domain.models import (
    Estimate,
    Instance,
    Plan,
    PriceList,
    RowOutcome,
    Unpriced,
    UnpricedReason,
    VpsRow,
    override_key,
)

__all__ = [
    "EXAMPLES",
    "FAILING_KINDS",
    "SWING_DOWN",
    "SWING_UP",
    "Flag",
    "conflicting_instances",
    "coverage_flags",
    "price_list_flags",
    "result_flags",
    "shared_instances",
    "unused_overrides",
]

#: Ids named in one message, at most.
EXAMPLES = 5
#: A row's new value at least this many times its old one is a swing worth a look.
SWING_UP = Decimal(10)
#: A row's new value at most this fraction of its old one is a swing worth a look.
SWING_DOWN = Decimal("0.5")


@dataclass(frozen=True, slots=True)
class Flag:
    """One thing an operator should look at: a stable kind and one line saying what and how much."""

    kind: str
    message: str


def _some(items: Iterable[object]) -> str:
    listed = [str(i) for i in items]
    more = f" and {len(listed) - EXAMPLES} more" if len(listed) > EXAMPLES else ""
    return ", ".join(listed[:EXAMPLES]) + more


def conflicting_instances(instances: Sequence[Instance]) -> tuple[list[Instance], set[int]]:
    """The instances with one entry per service id, and the ids Hostwinds listed twice, differently.

    Identical repeats are harmless and kept once. Differing repeats (a twin on another plan) make
    that service's price unknowable from this answer: the caller must not price it on either.
    """
    first: dict[int, Instance] = {}
    conflicting: set[int] = set()
    for instance in instances:
        seen = first.setdefault(instance.serviceid, instance)
        if seen != instance:
            conflicting.add(instance.serviceid)
    if len(first) == len(instances):
        return list(instances), conflicting
    return list(first.values()), conflicting


def shared_instances(matches: Sequence[tuple[VpsRow, Instance | None]]) -> dict[int, list[VpsRow]]:
    """Service ids matched by more than one row in scope (each such VPS would count more than once)."""
    by_service: defaultdict[int, list[VpsRow]] = defaultdict(list)
    for row, instance in matches:
        if instance is not None:
            by_service[instance.serviceid].append(row)
    return {sid: rows for sid, rows in by_service.items() if len(rows) > 1}


def unused_overrides(overrides: Mapping[str, Decimal], rows: Sequence[VpsRow]) -> list[str]:
    """Override ids that name no row in scope (a typo, or a row gone): they price nothing."""
    if not overrides:
        return []
    named = {override_key(row.hostwinds_instance_id) for row in rows}
    return sorted(key for key in overrides if key not in named)


def price_list_flags(price_lists: Mapping[tuple[bool, str | None], Mapping[int, Plan]]) -> list[Flag]:
    """One ``price_list_row_unreadable`` flag per price-list row the reader skipped: which list
    (managed, drive type), the row's key and the path where reading stopped."""
    found: list[Flag] = []
    for (managed, drive_type), plans in sorted(
        price_lists.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        if not isinstance(plans, PriceList):
            continue
        for row in plans.unreadable:
            reason = UnpricedReason.CUSTOM_PLAN if row.custom else UnpricedReason.PLAN_UNREADABLE
            found.append(
                Flag(
                    "price_list_row_unreadable",
                    f"price_list_row_unreadable: price list managed={int(managed)} "
                    f"drive_type={drive_type or '(default)'}: {row.describe()}; instances on that plan "
                    f"without their own cycle prices are unpriced ({reason.value}), other rows are priced",
                )
            )
    return found


#: Flags that make ``--once`` exit 1 although the run committed: it priced too little to trust.
FAILING_KINDS = frozenset({"mostly_unpriced", "nothing_matched"})

# What `cost-sync doctor` would say to fix, per unpriced reason.
_FIXES: dict[UnpricedReason, str] = {
    UnpricedReason.PLAN_NOT_FOUND: "run `cost-sync doctor`: its plan_join check compares product_id "
    "with the price list's `id` and `rid` and says which [hostwinds] plan_key the data supports",
    UnpricedReason.NOT_FOUND: "check the rows' hostwinds_instance_id against "
    "`cost-sync doctor`'s matching check",
    UnpricedReason.UNKNOWN_CYCLE: "confirm the spellings on an invoice and map them in "
    "[hostwinds.cycle_aliases] (`cost-sync doctor` lists them)",
    UnpricedReason.CYCLE_PRICES_UNAVAILABLE: "run `cost-sync doctor`: its get_billingcycle_prices check "
    "names the cause",
    UnpricedReason.PLAN_UNREADABLE: "capture the answers (`cost-sync doctor --capture DIR`) and report them",
    UnpricedReason.CUSTOM_PLAN: "custom plans are priced per service: check get_billingcycle_prices with "
    "`cost-sync doctor`, or set [overrides] for them",
}


def coverage_flags(
    outcomes: Sequence[RowOutcome],
    *,
    instances_listed: int,
    max_unpriced_ratio: Decimal,
    plan_key: str,
    plan_keys: Mapping[str, Collection[int]] | None = None,
) -> list[Flag]:
    """``nothing_matched`` when Hostwinds lists instances and no row in scope matches one;
    ``mostly_unpriced`` when more than ``max_unpriced_ratio`` of the matched rows are unpriced
    (``pending`` rows, which keep their value for the next run, are not counted).

    ``plan_keys`` maps ``"id"`` and ``"rid"`` to the values the price lists carry in each field,
    so that a wrong ``plan_key`` is named with the value that would join.
    """
    matched = [o for o in outcomes if o.instance is not None]
    if instances_listed and not matched:
        return [
            Flag(
                "nothing_matched",
                f"nothing_matched: Hostwinds lists {instances_listed} instance(s) and no row in scope "
                f"matches any of them ({instances_listed} instance(s) have no row; {len(outcomes)} "
                "row(s) in scope); check which database COST_SYNC_DATABASE_URL names and the rows' "
                "hostwinds_instance_id (`cost-sync doctor` shows the matching)",
            )
        ]
    unpriced = Counter(
        o.result.reason
        for o in matched
        if isinstance(o.result, Unpriced) and o.result.reason is not UnpricedReason.PENDING
    )
    total = sum(unpriced.values())
    if not matched or Decimal(total) <= max_unpriced_ratio * len(matched):
        return []
    top = unpriced.most_common(3)
    reasons = ", ".join(f"{reason.value} {count}" for reason, count in top)
    first = top[0][0]
    fix = _FIXES.get(first, "run `cost-sync doctor`")
    if first is UnpricedReason.PLAN_NOT_FOUND and plan_keys:
        products = [
            o.instance.product_id for o in matched if o.instance is not None and o.instance.product_id
        ]
        other = "rid" if plan_key == "id" else "id"
        joins = {key: sum(1 for p in products if p in plan_keys.get(key, ())) for key in ("id", "rid")}
        if joins[other] > joins[plan_key]:
            fix = (
                f"the instances' product_id matches the price list's `{other}` for {joins[other]} of "
                f"{len(products)} and `{plan_key}` for {joins[plan_key]}: set [hostwinds] plan_key = "
                f'"{other}" (COST_SYNC_HOSTWINDS_PLAN_KEY={other}); `cost-sync doctor` cross-checks the names'
            )
    return [
        Flag(
            "mostly_unpriced",
            f"mostly_unpriced: {total} of {len(matched)} matched rows in scope are unpriced (more than "
            f"max_unpriced_ratio {max_unpriced_ratio}); top reasons: {reasons}; fix: {fix}",
        )
    ]


def _held(outcomes: Iterable[RowOutcome], held: Collection[uuid.UUID]) -> int:
    return sum(1 for o in outcomes if o.row.id in held) if held else 0


def result_flags(
    outcomes: Sequence[RowOutcome],
    *,
    instances_listed: int,
    shared: Mapping[int, list[VpsRow]],
    unused: Sequence[str],
    conflicting: set[int],
    shared_uuids: Mapping[str, Sequence[int]] | None = None,
    held: Collection[uuid.UUID] = (),
) -> list[Flag]:
    """Every flag of a priced run, in a stable order (``held``: the rows whose change the guard held)."""
    flags: list[Flag] = []
    if conflicting:
        flags.append(
            Flag(
                "duplicate_instance",
                f"Hostwinds listed {len(conflicting)} service id(s) more than once with different "
                f"data ({_some(sorted(conflicting))}): their rows are unpriced and keep their value",
            )
        )
    if shared_uuids:
        # The uuids themselves are Hostwinds values: the message names the service ids only.
        services = sorted({sid for sids in shared_uuids.values() for sid in sids})
        flags.append(
            Flag(
                "shared_server_uuid",
                f"Hostwinds listed {len(shared_uuids)} server_uuid(s) on more than one service id "
                f"(services {_some(services)}): rows keyed by such a server_uuid are unpriced "
                "and keep their value; rows keyed by serviceid are priced",
            )
        )
    if shared:
        rows = sum(len(r) for r in shared.values())
        flags.append(
            Flag(
                "rows_share_instance",
                f"{rows} rows name only {len(shared)} Hostwinds instance(s) between them "
                f"(service {_some(sorted(shared))}): each row is priced, "
                "so totals count those VPS more than once",
            )
        )
    if unused:
        flags.append(
            Flag(
                "override_unused",
                f"{len(unused)} override(s) name no row in scope ({_some(repr(u) for u in unused)}): "
                "they price nothing",
            )
        )
    if instances_listed == 0 and outcomes:
        flags.append(
            Flag(
                "no_instances",
                f"Hostwinds listed no instances while {len(outcomes)} rows are in scope: "
                "every row is unpriced and keeps its value",
            )
        )
    reasons = Counter(o.result.reason for o in outcomes if isinstance(o.result, Unpriced))
    matched = sum(1 for o in outcomes if o.instance is not None)
    missing = reasons[UnpricedReason.PLAN_NOT_FOUND]
    if missing >= 2 and missing * 2 > matched:
        flags.append(
            Flag(
                "plans_missing",
                f"the price list lacks the plan of {missing} of {matched} matched rows",
            )
        )
    swings = [
        o
        for o in outcomes
        if isinstance(o.result, Estimate)
        and o.changed
        and o.row.approximate_cost
        and (
            o.result.monthly >= o.row.approximate_cost * SWING_UP
            or o.result.monthly <= o.row.approximate_cost * SWING_DOWN
        )
    ]
    if swings:
        example = swings[0]
        assert isinstance(example.result, Estimate)
        flags.append(
            Flag(
                "price_swing",
                f"{len(swings)} of {len(outcomes)} rows change to x{SWING_UP} or more or to "
                f"x{SWING_DOWN} or less of their value (e.g. "
                f"{example.row.approximate_cost} -> {example.result.monthly})"
                + (f"; {kept} of them held for approval" if (kept := _held(swings, held)) else ""),
            )
        )
    return flags
