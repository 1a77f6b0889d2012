"""The pure steps of a run: each takes what the run has read or asked and returns what it decided.

No database, no HTTP, no clock: :class:`~cost_sync.run.sync.SyncRun` reads, asks and writes, and
hands the data to these in order: match, decide, price, guard, then the report's cache figures
and flags.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from cost_sync.domain import flags, guard, pricing
from cost_sync.domain.matching import (
    Match,
    PlanNameCheck,
    PriceListKey,
    PricePlan,
    check_plan_names,
    joined_plan,
    match_rows,
    plan_asks,
    price_matched,
    wanted_instances,
)
from cost_sync.domain.models import (
    AskReason,
    Estimate,
    Fallback,
    HeldChange,
    Instance,
    Observation,
    Plan,
    PriceCacheReport,
    PriceSource,
    RowOutcome,
    Unpriced,
    UnpricedReason,
    VpsRow,
    override_key,
)
from cost_sync.settings import GuardSettings, Settings
from cost_sync.store.protocols import LastRun

__all__ = [
    "Decision",
    "Fetched",
    "Listed",
    "Matched",
    "Priced",
    "cache_report",
    "changed_hostwinds_prices",
    "decide",
    "hold",
    "match",
    "plans_refusal",
    "price",
    "run_flags",
    "unavailable_everywhere",
    "unmatched_refusal",
]

# Asked first when the budget cannot cover every service: an upgraded plan before a routine refresh.
_ASK_ORDER = {AskReason.FORCED: 0, AskReason.CHANGED: 1, AskReason.NEW: 2, AskReason.STALE: 3}


@dataclass(frozen=True)
class Listed:
    """What the run listed: Hostwinds' instances (one per service id) and the rows in scope."""

    #: The instances, a service Hostwinds listed twice with different data kept once.
    instances: list[Instance]
    #: How many entries get_instances returned.
    instances_listed: int
    #: Service ids Hostwinds listed more than once with different data.
    conflicting: set[int]
    #: server_uuids listed on more than one service id.
    shared_uuids: dict[str, tuple[int, ...]]
    #: The rows in scope (the targets' only, when the run names some).
    rows: list[VpsRow]
    #: Override ids that name no row of the statuses in scope.
    unused: list[str] = field(default_factory=list)
    #: Targets that name no row in scope, and why.
    unknown: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Matched:
    """Every row with its instance, and the instances a Hostwinds price is needed for."""

    matches: list[Match]
    #: By serviceid; overridden rows and conflicting services need none.
    wanted: dict[int, Instance]
    #: Service ids matched by more than one row.
    shared: dict[int, list[VpsRow]]


@dataclass(frozen=True)
class Decision:
    """What the run asks: the price plan, in asking order, and the rows it wants provisional."""

    plan: PricePlan
    #: The services to ask, the most needed first.
    order: list[int]
    #: Instances of rows with no value whose asking may end early for the price list's estimate.
    cold: list[Instance]


@dataclass
class Fetched:
    """What Hostwinds answered: the price lists and the cycle prices asked, as they arrive."""

    price_lists: dict[PriceListKey, dict[int, Plan]] = field(default_factory=dict)
    answers: dict[int, Observation] = field(default_factory=dict)
    #: serviceid -> why its cycle prices could not be used: an error envelope or an unreadable answer.
    failed: dict[int, tuple[Fallback, str]] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Priced:
    """Every row's decision, the plan-name comparison and the plans in use."""

    outcomes: list[RowOutcome]
    names: PlanNameCheck
    #: Product ids of matched instances whose price list has the plan.
    plans_in_use: list[int]


def match(listed: Listed, overrides: Mapping[str, Decimal]) -> Matched:
    """Match the rows to the instances; a conflicting service is wanted by none (fail closed)."""
    matches = match_rows(listed.rows, listed.instances)
    wanted = wanted_instances(matches, overrides)
    for serviceid in listed.conflicting:
        # Fail closed for that service: neither twin's plan is trusted, nothing is asked.
        wanted.pop(serviceid, None)
    return Matched(matches=matches, wanted=wanted, shared=flags.shared_instances(matches))


def decide(
    matched: Matched,
    observations: Mapping[int, Observation],
    settings: Settings,
    *,
    now: datetime,
    full: bool,
    provisional_seconds: float,
) -> Decision:
    """Which services to ask (cache misses, changed, stale, or all when ``full``), in what order.

    ``cold`` names the rows with no value waiting for per-service prices when the run cannot ask
    every service within ``provisional_seconds`` at the configured rate (a cold start, or many new
    instances); else it is empty.
    """
    plan = plan_asks(
        matched.wanted,
        observations,
        now=now,
        max_age_seconds=settings.sync.max_price_age_seconds,
        managed=settings.hostwinds.managed,
        full=full,
    )
    order = sorted(plan.asks, key=lambda sid: (_ASK_ORDER[plan.asks[sid]], sid))
    cold: list[Instance] = []
    rate = settings.hostwinds.requests_per_second
    if rate and len(plan.asks) > provisional_seconds * rate:
        overrides = settings.overrides
        cold = [
            instance
            for row, instance in matched.matches
            if row.approximate_cost is None
            and instance is not None
            and instance.serviceid in plan.asks
            and not (overrides and overrides.get(override_key(row.hostwinds_instance_id)) is not None)
        ]
    return Decision(plan=plan, order=order, cold=cold)


def list_prices_any(
    instances: Sequence[Instance], price_lists: Mapping[PriceListKey, Mapping[int, Plan]], settings: Settings
) -> bool:
    """True when the price lists give at least one of these instances an estimate."""
    managed = settings.hostwinds.managed
    aliases = settings.hostwinds.cycle_aliases
    for instance in instances:
        plan = joined_plan(instance, price_lists, managed=managed)
        if plan is not None and isinstance(
            pricing.estimate_instance(instance, cycle_prices=None, plan=plan, aliases=aliases), Estimate
        ):
            return True
    return False


def price(listed: Listed, matched: Matched, plan: PricePlan, fetched: Fetched, settings: Settings) -> Priced:
    """Price every matched row from the cached and fetched answers; what was not reached is pending."""
    managed = settings.hostwinds.managed
    cycle_prices = {sid: o.prices for sid, o in plan.hits.items()}
    cycle_prices.update({sid: o.prices for sid, o in fetched.answers.items()})
    # A service whose cycle prices failed falls back to the price list (matching.price_matched).
    failed = {sid: (kind, f"service {sid}: {why}") for sid, (kind, why) in fetched.failed.items()}
    withheld = {
        sid: Unpriced(UnpricedReason.PENDING, "not reached within this run's time budget")
        for sid in fetched.pending
    }
    withheld.update(
        {
            sid: Unpriced(
                UnpricedReason.DUPLICATE_INSTANCE,
                f"Hostwinds listed service {sid} more than once with different data",
            )
            for sid in listed.conflicting
        }
    )
    outcomes = price_matched(
        matched.matches,
        overrides=settings.overrides,
        cycle_prices=cycle_prices,
        price_lists=fetched.price_lists,
        managed=managed,
        withheld=withheld,
        aliases=settings.hostwinds.cycle_aliases,
        shared_uuids=listed.shared_uuids,
        failed=failed,
    )
    instances = [i for _, i in matched.matches if i is not None]
    names = check_plan_names(instances, fetched.price_lists, managed=managed)
    plans_in_use = sorted(
        {
            i.product_id
            for i in instances
            if i.product_id is not None
            and i.product_id in fetched.price_lists.get((managed, i.disk_type), {})
        }
    )
    return Priced(outcomes=outcomes, names=names, plans_in_use=plans_in_use)


def unmatched_refusal(
    matched: Matched, last: LastRun | None, settings: GuardSettings
) -> guard.Refusal | None:
    """Refuse when too many rows that matched at the last good run match nothing now."""
    if last is None:
        return None
    return guard.check_unmatched(
        matched.matches, max_unmatched_ratio=settings.max_unmatched_ratio, last_run=last.describe()
    )


def plans_refusal(last: LastRun | None, fetched: Fetched, settings: GuardSettings) -> guard.Refusal | None:
    """Refuse when the price lists lost too many of the plans in use at the last good run."""
    if last is None:
        return None
    return guard.check_plans(
        last.plans_in_use,
        (plan_id for plans in fetched.price_lists.values() for plan_id in plans),
        max_unmatched_ratio=settings.max_unmatched_ratio,
        last_run=last.describe(),
    )


def changed_hostwinds_prices(outcomes: Sequence[RowOutcome]) -> list[uuid.UUID]:
    """The rows whose Hostwinds price changes: only these can be held."""
    return [
        o.row.id
        for o in outcomes
        if isinstance(o.result, Estimate) and o.changed and o.result.source is not PriceSource.OVERRIDE
    ]


def hold(
    outcomes: Sequence[RowOutcome],
    references: Mapping[uuid.UUID, guard.Reference],
    settings: GuardSettings,
    *,
    accept: bool,
) -> list[HeldChange]:
    """The changes to hold for a person (none when ``accept``); with ``drift_window_days`` 0 a
    change is compared with the row's value alone, not with an anchor of its history."""
    if not settings.drift_window_days:
        references = {k: replace(v, anchor=None) for k, v in references.items()}
    return guard.hold_changes(
        outcomes, max_change_ratio=settings.max_change_ratio, accept=accept, references=references
    )


def cache_report(plan: PricePlan, fetched: Fetched) -> PriceCacheReport:
    """How the run used the observation cache: hits, and the services asked by reason."""
    asked = fetched.answers.keys() | fetched.failed.keys()
    return PriceCacheReport(
        hits=len(plan.hits),
        asked=len(fetched.answers) + len(fetched.failed),
        reasons={
            reason.value: sum(1 for sid, why in plan.asks.items() if why is reason and sid in asked)
            for reason in AskReason
        },
        failed=len(fetched.failed),
        pending=len(fetched.pending),
    )


def run_flags(
    listed: Listed,
    matched: Matched,
    fetched: Fetched,
    outcomes: Sequence[RowOutcome],
    held: Sequence[HeldChange],
    settings: Settings,
) -> list[flags.Flag]:
    """Everything the run's report warns of, in a stable order."""
    raised = flags.price_list_flags(fetched.price_lists)
    everywhere = unavailable_everywhere(fetched.failed, asked=len(fetched.answers) + len(fetched.failed))
    if everywhere is not None:
        raised.append(everywhere)
    raised += flags.result_flags(
        outcomes,
        instances_listed=listed.instances_listed,
        shared=matched.shared,
        unused=listed.unused,
        conflicting=listed.conflicting,
        shared_uuids=listed.shared_uuids,
        held={h.row_id for h in held},
    )
    plans = [p for plans in fetched.price_lists.values() for p in plans.values()]
    raised += flags.coverage_flags(
        outcomes,
        instances_listed=listed.instances_listed,
        max_unpriced_ratio=settings.guard.max_unpriced_ratio,
        plan_key=settings.hostwinds.plan_key,
        plan_keys={"id": {p.id for p in plans}, "rid": {p.rid for p in plans if p.rid is not None}},
    )
    return raised


_SERVICE_ID = re.compile(r"service \d+")


def unavailable_everywhere(failed: Mapping[int, tuple[Fallback, str]], *, asked: int) -> flags.Flag | None:
    """The ``cycle_prices_unavailable_everywhere`` warning when every service asked this run failed
    the same way (one kind, one message but for the service id); None otherwise."""
    if not failed or len(failed) < asked:
        return None
    kinds = {(kind, _SERVICE_ID.sub("service N", why)) for kind, why in failed.values()}
    if len(kinds) != 1:
        return None
    [(kind, why)] = kinds
    return flags.Flag(
        "cycle_prices_unavailable_everywhere",
        f"cycle_prices_unavailable_everywhere: all {len(failed)} service(s) asked answered "
        f"get_billingcycle_prices the same way ({why}); every row is priced from the price list "
        f"(fallback {kind.value}); `cost-sync doctor` says the likely cause and the fix",
    )
