"""Pure derivations: how a stored value follows from its recorded price, and what another plan would cost.

Guarantees: no I/O, no logging, no clock, no float. :func:`derive` recomputes a history entry's
value with :func:`cost_sync.domain.pricing.monthly_from_cycle`, the function runs store with, and says
whether it reproduces the stored value; the quotient is shown exactly when it terminates, else to
twenty places marked as cut. :func:`compute_now` and :func:`quote` price with
:func:`cost_sync.domain.pricing.estimate_instance`, the same rules a run applies.
"""

from __future__ import annotations

import dataclasses
import decimal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cost_sync.domain import pricing
from cost_sync.domain.fingerprint import instance_from_fingerprint
from cost_sync.domain.matching import plan_of
from cost_sync.domain.models import (
    Cycle,
    Estimate,
    Instance,
    Plan,
    PriceCell,
    PriceSource,
    Unpriced,
    UnpricedReason,
)

__all__ = [
    "HistoryRecord",
    "Quote",
    "compute_now",
    "derive",
    "exact_quotient",
    "quote",
]

_QUOTIENT = decimal.Context(prec=60, rounding=decimal.ROUND_DOWN)
_SHOWN_PLACES = 20


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One ``cost_sync_history`` row: a change and the price it was derived from."""

    run_id: uuid.UUID
    at: datetime
    old: Decimal | None
    new: Decimal
    source: str
    cycle: str | None
    cycle_price: Decimal | None
    months: int | None
    hourly_ceiling: bool = False
    product_id: int | None = None
    product_name: str | None = None
    approved: bool = False
    proposed_by: uuid.UUID | None = None
    #: The account's cycle spelling when a [hostwinds.cycle_aliases] entry chose the cycle.
    cycle_alias: str | None = None
    #: Why a price_list value did not come from the service's own cycle prices (sql/0009).
    fallback: str | None = None
    #: A price-list estimate given while the service's own cycle prices were still to be asked.
    provisional: bool = False


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def exact_quotient(price: Decimal, months: int) -> tuple[str, bool]:
    """``price / months`` as text, and whether that text is exact (else cut after 20 places)."""
    quotient = _QUOTIENT.divide(price, Decimal(months))
    if _QUOTIENT.multiply(quotient, Decimal(months)) == price:
        return str(quotient.normalize(_QUOTIENT)), True
    cut = quotient.quantize(Decimal(1).scaleb(-_SHOWN_PLACES), rounding=decimal.ROUND_DOWN)
    return f"{cut}...", False


def derive(entry: HistoryRecord) -> dict[str, Any]:
    """The entry as JSON-ready values with its derivation; ``reproduces`` says the recomputation agrees."""
    data: dict[str, Any] = {
        "run_id": str(entry.run_id),
        "at": entry.at.isoformat(),
        "old": _text(entry.old),
        "new": str(entry.new),
        "source": entry.source,
        "cycle": entry.cycle,
        "cycle_price": _text(entry.cycle_price),
        "months": entry.months,
        "hourly_ceiling": entry.hourly_ceiling,
        "product_id": entry.product_id,
        "product_name": entry.product_name,
        "approved": entry.approved,
        "proposed_by": None if entry.proposed_by is None else str(entry.proposed_by),
        "cycle_alias": entry.cycle_alias,
        "fallback": entry.fallback,
        "provisional": entry.provisional,
    }
    if entry.source == "override":
        data.update(quotient=None, quotient_exact=None, rounded=str(entry.new), reproduces=True)
        data["rule"] = "Finance override: stored as configured, no division"
        return data
    if entry.cycle_price is None or entry.months is None:
        data.update(quotient=None, quotient_exact=None, rounded=None, reproduces=False)
        data["rule"] = "no cycle price recorded: cannot be recomputed"
        return data
    quotient, exact = exact_quotient(entry.cycle_price, entry.months)
    rounded = pricing.monthly_from_cycle(entry.cycle_price, entry.months)
    data.update(
        quotient=quotient, quotient_exact=exact, rounded=str(rounded), reproduces=rounded == entry.new
    )
    data["rule"] = (
        f"{entry.cycle_price} / {entry.months} = {quotient}, rounded once half-up to cents = {rounded}"
        + (" (hourly: the plan's monthly price is the ceiling)" if entry.hourly_ceiling else "")
    )
    return data


def compute_now(
    *,
    override: Decimal | None,
    serviceid: int | None,
    prices: Mapping[Cycle, PriceCell] | None,
    fingerprint: str | None,
    aliases: Mapping[str, Cycle] | None = None,
    plans: Mapping[int, Plan] | None = None,
) -> Estimate | Unpriced:
    """What a run would store now from the cache alone: the service's cached observation, and
    ``plans``, the cached price list of its options (None: none is cached)."""
    if override is not None:
        return Estimate(monthly=override, source=PriceSource.OVERRIDE)
    if serviceid is None or prices is None or fingerprint is None:
        return Unpriced(UnpricedReason.NOT_FOUND, "no cached observation for this row")
    instance = instance_from_fingerprint(serviceid, fingerprint)
    if instance is None:
        return Unpriced(UnpricedReason.NOT_FOUND, "the cached observation's fingerprint is unreadable")
    plan = plan_of(instance, plans)
    result = pricing.estimate_instance(instance, cycle_prices=prices, plan=plan, aliases=aliases)
    if isinstance(result, Unpriced) and result.reason is UnpricedReason.PLAN_NOT_FOUND and plans is None:
        return Unpriced(
            result.reason, "the cached cycle prices have no price for it and no price list is cached"
        )
    return result


@dataclass(frozen=True, slots=True)
class Quote:
    """An instance's monthly cost on another plan or cycle, next to its current value."""

    instance: Instance
    plan_id: int
    cycle: str | None
    result: Estimate | Unpriced
    current: Decimal | None

    @property
    def difference(self) -> Decimal | None:
        """The quoted monthly cost minus the current value, when both are known."""
        if not isinstance(self.result, Estimate) or self.current is None:
            return None
        return self.result.monthly - self.current

    def as_json(self) -> dict[str, Any]:
        """The quote as JSON-ready values (amounts as strings)."""
        est = self.result if isinstance(self.result, Estimate) else None
        unpriced = self.result if isinstance(self.result, Unpriced) else None
        return {
            "serviceid": self.instance.serviceid,
            "plan_id": self.plan_id,
            "cycle": est.cycle.value if est and est.cycle else self.cycle,
            "monthly": None if est is None else str(est.monthly),
            "cycle_price": None if est is None else _text(est.cycle_price),
            "months": None if est is None else est.months,
            "current": _text(self.current),
            "difference": _text(self.difference),
            "unpriced_reason": None if unpriced is None else unpriced.reason.value,
            "detail": None if unpriced is None else unpriced.detail,
        }


def quote(
    instance: Instance,
    *,
    plan: Plan | None,
    plan_id: int,
    cycle: str | None,
    current: Decimal | None,
    aliases: Mapping[str, Cycle] | None = None,
) -> Quote:
    """The instance on plan ``plan_id`` (and ``cycle``, else its own) priced from the price list.

    A run after the upgrade prices the new plan from Hostwinds' per-service prices when it has
    them; before the upgrade only the price list knows the new plan, so a quote uses it.
    """
    moved = dataclasses.replace(
        instance,
        product_id=plan_id,
        billingcycle=cycle if cycle is not None else instance.billingcycle,
        hourly=instance.hourly if cycle is None else False,
    )
    return Quote(
        instance=moved,
        plan_id=plan_id,
        cycle=cycle,
        result=pricing.estimate_instance(moved, cycle_prices=None, plan=plan, aliases=aliases),
        current=current,
    )
