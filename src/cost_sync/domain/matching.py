"""Pure run logic beside pricing: match rows to instances, decide what to ask Hostwinds, price every row.

Guarantees: no I/O, no logging; time enters only as an argument. A row is matched to at most one
instance; an observation is reused only while its instance's fingerprint is unchanged and it is not
stale; every row in scope gets exactly one :class:`~cost_sync.domain.models.RowOutcome`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from cost_sync.domain import pricing
from cost_sync.domain.fingerprint import same_fingerprint
from cost_sync.domain.gc_pause import gc_paused
from cost_sync.domain.models import (
    AskReason,
    Cycle,
    Estimate,
    Fallback,
    Instance,
    Observation,
    Plan,
    PriceCell,
    PriceList,
    RowOutcome,
    Unpriced,
    UnpricedReason,
    VpsRow,
    override_key,
)

__all__ = [
    "Match",
    "PlanNameCheck",
    "PriceListKey",
    "PricePlan",
    "RowIdentity",
    "RowIndex",
    "check_plan_names",
    "identify",
    "index_instances",
    "joined_plan",
    "match_instance",
    "match_rows",
    "names_serviceid",
    "plan_asks",
    "plan_names_agree",
    "plan_of",
    "price_list_of",
    "price_matched",
    "price_rows",
    "refresh_due",
    "resolve_targets",
    "shared_server_uuids",
    "shared_uuid_unpriced",
    "unreadable_plan",
    "wanted_instances",
]

#: (managed, drive_type): the options one price list is asked with.
PriceListKey = tuple[bool, str | None]
Match = tuple[VpsRow, Instance | None]

# Knuth's multiplicative hash: consecutive serviceids land far apart in [0, 1), so a fleet priced
# in one run reaches its refresh slots evenly over the following max age.
_PHASE_MULTIPLIER = 2654435761
_PHASE_RANGE = 2**32


def _phase(serviceid: int) -> float:
    return ((serviceid * _PHASE_MULTIPLIER) % _PHASE_RANGE) / _PHASE_RANGE


def refresh_due(observed: datetime, now: datetime, *, max_age_seconds: float, serviceid: int) -> bool:
    """True once a refresh slot of this service has passed since ``observed``.

    Each service has slots every ``max_age_seconds``, offset by a phase drawn from its id, so no
    observation is ever older than the max age, and a fleet observed at one moment comes due
    spread evenly over the next max age instead of all at once. An observation dated after
    ``now`` was made by a clock that ran ahead: its age is unknown, so it is stale.
    """
    if observed > now:
        return True
    phase = _phase(serviceid)
    slot_then = math.floor(observed.timestamp() / max_age_seconds - phase)
    slot_now = math.floor(now.timestamp() / max_age_seconds - phase)
    return slot_now > slot_then


@dataclass(frozen=True, slots=True)
class PricePlan:
    """Which services a run asks for cycle prices (and why), and which cached answers it reuses."""

    asks: dict[int, AskReason]
    hits: dict[int, Observation]


def wanted_instances(matches: Sequence[Match], overrides: Mapping[str, Decimal]) -> dict[int, Instance]:
    """The matched instances a Hostwinds price is needed for, by serviceid (overridden rows need none)."""
    return {
        instance.serviceid: instance
        for row, instance in matches
        if instance is not None and override_key(row.hostwinds_instance_id) not in overrides
    }


def plan_asks(
    wanted: Mapping[int, Instance],
    observations: Mapping[int, Observation],
    *,
    now: datetime,
    max_age_seconds: float,
    managed: bool,
    full: bool = False,
) -> PricePlan:
    """Ask only what is needed: no observation (new), another fingerprint (changed), stale, or forced."""
    asks: dict[int, AskReason] = {}
    hits: dict[int, Observation] = {}
    for serviceid in sorted(wanted):
        observation = observations.get(serviceid)
        if full:
            asks[serviceid] = AskReason.FORCED
        elif observation is None:
            asks[serviceid] = AskReason.NEW
        elif not same_fingerprint(observation.fingerprint, wanted[serviceid], managed=managed):
            asks[serviceid] = AskReason.CHANGED
        elif refresh_due(observation.observed_at, now, max_age_seconds=max_age_seconds, serviceid=serviceid):
            asks[serviceid] = AskReason.STALE
        else:
            hits[serviceid] = observation
    return PricePlan(asks=asks, hits=hits)


def index_instances(
    instances: Iterable[Instance],
) -> tuple[dict[int, Instance], dict[str, Instance]]:
    """Return the instances keyed by serviceid and by lower-case server_uuid (if they have one).

    A server_uuid that several service ids carry names none of them: which VPS a row keyed by it
    means is unknowable (:func:`shared_server_uuids` says which they are).
    """
    by_serviceid: dict[int, Instance] = {}
    by_uuid: dict[str, Instance] = {}
    shared: set[str] = set()
    for instance in instances:
        by_serviceid[instance.serviceid] = instance
        if instance.server_uuid:
            key = instance.server_uuid.lower()
            if by_uuid.setdefault(key, instance).serviceid != instance.serviceid:
                shared.add(key)
    for key in shared:
        del by_uuid[key]
    return by_serviceid, by_uuid


def shared_server_uuids(instances: Iterable[Instance]) -> dict[str, tuple[int, ...]]:
    """Each lower-case server_uuid that more than one service id carries, with those ids (sorted)."""
    first: dict[str, int] = {}
    shared: dict[str, set[int]] = {}
    for instance in instances:
        if instance.server_uuid:
            key = instance.server_uuid.lower()
            serviceid = first.setdefault(key, instance.serviceid)
            if serviceid != instance.serviceid:
                shared.setdefault(key, {serviceid}).add(instance.serviceid)
    return {key: tuple(sorted(ids)) for key, ids in shared.items()}


def names_serviceid(key: str) -> bool:
    """Whether an id (trimmed) names a Hostwinds serviceid (ASCII digits) rather than a server_uuid."""
    return key.isascii() and key.isdigit()


def match_instance(
    hostwinds_instance_id: str | None,
    *,
    by_serviceid: Mapping[int, Instance],
    by_uuid: Mapping[str, Instance],
) -> Instance | None:
    """Return the instance an id names: ASCII digits by serviceid, anything else by server_uuid."""
    if hostwinds_instance_id is None:
        return None
    key = hostwinds_instance_id.strip()
    if key == "":
        return None
    if names_serviceid(key):
        try:
            return by_serviceid.get(int(key))
        except ValueError:  # more digits than int() converts: no serviceid is that long
            return None
    return by_uuid.get(key.lower())


@dataclass(frozen=True, slots=True)
class RowIdentity:
    """What an ID argument can name a ``vps_instances`` row by: its id, its
    ``hostwinds_instance_id``, or the ``serviceid``/``server_uuid`` of the instance it matches
    (from Hostwinds' answer in a run, from the stored row state in ``explain`` and ``approve``)."""

    id: uuid.UUID
    hostwinds_instance_id: str | None
    status: str | None
    serviceid: int | None = None
    #: Lower case; None when the row matches no instance or its uuid is shared by several services.
    server_uuid: str | None = None


def identify(
    identities: Iterable[tuple[uuid.UUID, str | None, str | None]], instances: Sequence[Instance]
) -> list[RowIdentity]:
    """(id, hostwinds_instance_id, status) of each row with the instance it matches in ``instances``."""
    by_serviceid, by_uuid = index_instances(instances)
    rows = []
    for row_id, hw_id, status in identities:
        matched = match_instance(hw_id, by_serviceid=by_serviceid, by_uuid=by_uuid)
        uuid_key = (matched.server_uuid or "").lower() if matched is not None else ""
        rows.append(
            RowIdentity(
                row_id,
                hw_id,
                status,
                matched.serviceid if matched is not None else None,
                # A uuid several services carry names none of them (index_instances).
                uuid_key if uuid_key and uuid_key in by_uuid else None,
            )
        )
    return rows


class RowIndex:
    """The one resolver from an ID argument to rows: ``--instance``, ``POST /resync``, ``explain``,
    ``approve`` and ``quote`` all name rows through it.

    An argument (trimmed, any case) names the row with that id or ``hostwinds_instance_id``, and
    the rows matching the instance it names: ASCII digits by serviceid, anything else by
    server_uuid (:func:`cost_sync.domain.match_instance`'s rule). Indexed once, so naming
    every row (``approve --all``) costs one pass, not one pass per argument.
    """

    def __init__(self, rows: Iterable[RowIdentity]) -> None:
        self._rows = list(rows)
        self._by_key: dict[str, list[int]] = defaultdict(list)
        self._by_serviceid: dict[int, list[int]] = defaultdict(list)
        self._by_uuid: dict[str, list[int]] = defaultdict(list)
        for index, row in enumerate(self._rows):
            self._by_key[str(row.id)].append(index)
            if row.hostwinds_instance_id is not None:
                self._by_key[row.hostwinds_instance_id.strip().lower()].append(index)
            if row.serviceid is not None:
                self._by_serviceid[row.serviceid].append(index)
            if row.server_uuid:
                self._by_uuid[row.server_uuid.lower()].append(index)

    def named(self, target: str) -> list[RowIdentity]:
        """The rows ``target`` names, in the order they were given."""
        key = target.strip()
        found = set(self._by_key.get(key.lower(), ()))
        if key and names_serviceid(key):
            # More digits than int() converts: no serviceid is that long.
            with contextlib.suppress(ValueError):
                found.update(self._by_serviceid.get(int(key), ()))
        elif key:
            found.update(self._by_uuid.get(key.lower(), ()))
        return [self._rows[i] for i in sorted(found)]

    def resolve(
        self, targets: Sequence[str], statuses: Sequence[str]
    ) -> tuple[set[uuid.UUID], dict[str, str]]:
        """Row ids in scope (``statuses``) the targets name, and why each naming none in scope fails."""
        chosen: set[uuid.UUID] = set()
        problems: dict[str, str] = {}
        for target in targets:
            hits = self.named(target)
            in_scope = [row.id for row in hits if row.status in statuses]
            if not hits:
                problems[target] = "matches no vps_instances row"
            elif not in_scope:
                problems[target] = f"row {hits[0].id} has status {hits[0].status!r}, which is not in scope"
            chosen.update(in_scope)
        return chosen, problems


def resolve_targets(
    targets: Sequence[str],
    identities: Iterable[tuple[uuid.UUID, str | None, str | None]],
    instances: Sequence[Instance],
    statuses: Sequence[str],
) -> tuple[set[uuid.UUID], dict[str, str]]:
    """Row ids named by ``--instance`` arguments, and why each argument naming no row in scope fails
    (:class:`RowIndex` over the rows as they match ``instances``)."""
    return RowIndex(identify(identities, instances)).resolve(targets, statuses)


def match_rows(rows: Sequence[VpsRow], instances: Sequence[Instance]) -> list[Match]:
    """Pair every row with the Hostwinds instance its ``hostwinds_instance_id`` names, if any."""
    by_serviceid, by_uuid = index_instances(instances)
    with gc_paused():
        return [
            (
                row,
                match_instance(row.hostwinds_instance_id, by_serviceid=by_serviceid, by_uuid=by_uuid),
            )
            for row in rows
        ]


def _name_key(name: str) -> str:
    return "".join(name.split()).casefold()


def plan_names_agree(product_name: str | None, plan_name: str | None) -> bool | None:
    """Whether an instance's product_name and its joined row's name are the same, ignoring case and
    whitespace; None when either is missing (nothing to compare)."""
    if not product_name or not plan_name:
        return None
    return _name_key(product_name) == _name_key(plan_name)


def plan_of(instance: Instance, plans: Mapping[int, Plan] | None) -> Plan | None:
    """The row of one price list an instance's product_id joins to (keyed by the plan_key field).

    The one plan lookup: runs, provisional estimates, the plan-name check and ``explain`` use it.
    """
    if instance.product_id is None or plans is None:
        return None
    return plans.get(instance.product_id)


def price_list_of(
    instance: Instance, price_lists: Mapping[PriceListKey, Mapping[int, Plan]], *, managed: bool
) -> Mapping[int, Plan] | None:
    """The price list an instance is priced from: the one asked with its options (managed, disk type)."""
    return price_lists.get((managed, instance.disk_type))


def joined_plan(
    instance: Instance, price_lists: Mapping[PriceListKey, Mapping[int, Plan]], *, managed: bool
) -> Plan | None:
    """The price-list row an instance's product_id joins to, in the list of its options."""
    return plan_of(instance, price_list_of(instance, price_lists, managed=managed))


@dataclass(frozen=True, slots=True)
class PlanNameCheck:
    """How the joined rows' names compare with the instances' product_name over one run."""

    agree: int
    disagree: int
    #: (row id, product_name, row name) of each distinct disagreement, for the log.
    disagreements: tuple[tuple[int, str, str], ...]

    def counts(self) -> dict[str, int]:
        """``{"agree": n, "disagree": n}`` as the run report keeps it."""
        return {"agree": self.agree, "disagree": self.disagree}


def check_plan_names(
    instances: Iterable[Instance],
    price_lists: Mapping[PriceListKey, Mapping[int, Plan]],
    *,
    managed: bool,
) -> PlanNameCheck:
    """Compare every instance's product_name with the name of the row it joins to (once per instance)."""
    agree = disagree = 0
    seen: dict[tuple[int, str, str], None] = {}
    # A fleet repeats a few (disk type, product, name) triples: each is joined and compared once.
    verdicts: dict[tuple[str | None, int | None, str | None], bool | None] = {}
    for instance in instances:
        key = (instance.disk_type, instance.product_id, instance.product_name)
        if key in verdicts:
            same = verdicts[key]
        else:
            plan = joined_plan(instance, price_lists, managed=managed)
            same = None if plan is None else plan_names_agree(instance.product_name, plan.name)
            verdicts[key] = same
            if same is False and plan is not None:
                seen.setdefault((plan.id, instance.product_name or "", plan.name or ""), None)
        if same is True:
            agree += 1
        elif same is False:
            disagree += 1
    return PlanNameCheck(agree=agree, disagree=disagree, disagreements=tuple(seen))


def price_matched(
    matches: Sequence[Match],
    *,
    overrides: Mapping[str, Decimal],
    cycle_prices: Mapping[int, Mapping[Cycle, PriceCell]],
    price_lists: Mapping[PriceListKey, Mapping[int, Plan]],
    managed: bool,
    withheld: Mapping[int, Unpriced] | None = None,
    aliases: Mapping[str, Cycle] | None = None,
    shared_uuids: Mapping[str, Sequence[int]] | None = None,
    failed: Mapping[int, tuple[Fallback, str]] | None = None,
) -> list[RowOutcome]:
    """Decide every matched row: pick its price source, estimate.

    ``failed`` names services whose cycle prices were asked and could not be used (an error
    envelope, an unreadable answer): their rows are priced from the price list with that
    ``fallback``, else unpriced ``cycle_prices_unavailable``.

    ``withheld`` names services whose cycle prices this run could not establish (not reached in
    its budget, or unreadable): their rows are unpriced with that reason, and keep their value.
    ``aliases`` map an account's cycle spellings to cycles (``[hostwinds.cycle_aliases]``).
    ``shared_uuids`` (:func:`shared_server_uuids`): a row keyed by a server_uuid that several
    services carry matched none of them; it is unpriced ``duplicate_instance``, not ``not_found``.
    """
    outcomes = []
    withheld = withheld or {}
    failed = failed or {}
    with gc_paused():
        for row, instance in matches:
            override = overrides.get(override_key(row.hostwinds_instance_id)) if overrides else None
            if override is None and instance is not None and instance.serviceid in withheld:
                kept = withheld[instance.serviceid]
                if kept.reason is UnpricedReason.PENDING and row.approximate_cost is None:
                    # A number early: a row with no value gets the price list's estimate now,
                    # marked provisional; its own cycle prices refine it in a later run.
                    estimate = _provisional(instance, price_lists, managed=managed, aliases=aliases)
                    if estimate is not None:
                        outcomes.append(RowOutcome(row, instance, estimate))
                        continue
                outcomes.append(RowOutcome(row, instance, kept))
                continue
            if override is None and instance is None and shared_uuids:
                services = shared_uuids.get((row.hostwinds_instance_id or "").strip().lower())
                if services is not None:
                    outcomes.append(RowOutcome(row, None, shared_uuid_unpriced(services)))
                    continue
            plan = None
            missing = None
            if instance is not None and instance.product_id is not None:
                plans = price_list_of(instance, price_lists, managed=managed)
                plan = plan_of(instance, plans)
                if plan is None and isinstance(plans, PriceList) and plans.unreadable:
                    missing = unreadable_plan(plans, instance.product_id)
            result = pricing.price_row(
                row,
                instance,
                override=override,
                cycle_prices=cycle_prices.get(instance.serviceid) if instance else None,
                plan=plan,
                aliases=aliases,
                plan_missing=missing,
                failed=failed.get(instance.serviceid) if instance is not None and failed else None,
            )
            outcomes.append(RowOutcome(row, instance, result))
    return outcomes


def _provisional(
    instance: Instance,
    price_lists: Mapping[PriceListKey, Mapping[int, Plan]],
    *,
    managed: bool,
    aliases: Mapping[str, Cycle] | None,
) -> Estimate | None:
    """The price list's estimate for an instance whose own cycle prices are still to be asked,
    marked provisional; None when the list cannot price it."""
    plan = joined_plan(instance, price_lists, managed=managed)
    if plan is None:
        return None
    result = pricing.estimate_instance(instance, cycle_prices=None, plan=plan, aliases=aliases)
    if not isinstance(result, Estimate):
        return None
    return dataclasses.replace(result, provisional=True)


def unreadable_plan(plans: PriceList, product_id: int) -> Unpriced | None:
    """Why an instance on plan ``product_id`` cannot be priced from this list, when the list has a
    row for that plan it could not read: ``custom_plan`` or ``plan_unreadable``, with the path."""
    row = plans.unreadable_row(product_id)
    if row is None:
        return None
    if row.custom:
        return Unpriced(
            UnpricedReason.CUSTOM_PLAN,
            f"plan {product_id} is a custom plan priced per service only ({row.path})",
        )
    return Unpriced(
        UnpricedReason.PLAN_UNREADABLE,
        f"price-list row for plan {product_id} could not be read at {row.path}: {row.detail}",
    )


def shared_uuid_unpriced(services: Sequence[int]) -> Unpriced:
    """Why a row keyed by a server_uuid that these services all carry is not priced."""
    listed = ", ".join(str(s) for s in services)
    return Unpriced(
        UnpricedReason.DUPLICATE_INSTANCE,
        f"its server_uuid is on services {listed}; name one by serviceid",
    )


def price_rows(
    rows: Sequence[VpsRow],
    instances: Sequence[Instance],
    *,
    overrides: Mapping[str, Decimal],
    cycle_prices: Mapping[int, Mapping[Cycle, PriceCell]],
    price_lists: Mapping[PriceListKey, Mapping[int, Plan]],
    managed: bool,
    aliases: Mapping[str, Cycle] | None = None,
) -> list[RowOutcome]:
    """Decide every row: match it to its instance, pick its price source, estimate."""
    return price_matched(
        match_rows(rows, instances),
        overrides=overrides,
        cycle_prices=cycle_prices,
        price_lists=price_lists,
        managed=managed,
        aliases=aliases,
        shared_uuids=shared_server_uuids(instances),
    )
