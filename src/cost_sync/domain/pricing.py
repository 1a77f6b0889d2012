"""Pure pricing: Hostwinds price cells and cycles in, a monthly USD estimate or a reason out.

Guarantees: no I/O, no logging, no clock, no float. Every estimate is a positive ``Decimal`` with
exactly two decimals, at most :data:`MAX_MONTHLY`, rounded once, half-up. Anything missing, not
offered, unparsable or out of range yields :class:`~cost_sync.domain.models.Unpriced` with a reason,
never a zero and never a guess. No function here raises on text that came from Hostwinds.
"""

from __future__ import annotations

import decimal
import functools
import re
from collections.abc import Mapping
from decimal import Decimal

from cost_sync.domain.models import (
    Cycle,
    Estimate,
    Fallback,
    Instance,
    Plan,
    PriceCell,
    PriceSource,
    Unpriced,
    UnpricedReason,
    VpsRow,
)
from cost_sync.domain.redact import redact

__all__ = [
    "MAX_CELL_TEXT",
    "MAX_MONTHLY",
    "TOO_LONG_CELL",
    "UNREADABLE_CELL",
    "bounded_cell",
    "cacheable_cell",
    "estimate_instance",
    "monthly_from_cycle",
    "normalise_cycle",
    "parse_price_cell",
    "price_row",
    "spelling_key",
]

MAX_MONTHLY = Decimal("999999.99")

_CENT = Decimal("0.01")
_HALF_CENT = Decimal("0.005")
_CYCLES_BY_NAME: dict[str, Cycle] = {c.value: c for c in Cycle}
_SEPARATORS = re.compile(r"[\s_-]+")
# ASCII only: Decimal() alone would also take "1_000", "NaN" and non-ASCII digits such as "١٢".
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_OFFERED_VALUES = (Decimal(-1), Decimal(0))
_DETAIL_TEXT_MAX = 40
# Module-level names for the members the per-row path uses: an enum attribute lookup per use adds
# up over 100,000 rows.
_MONTHLY, _HOURLY = Cycle.MONTHLY, Cycle.HOURLY
_CYCLE_PRICES, _PRICE_LIST = PriceSource.CYCLE_PRICES, PriceSource.PRICE_LIST
_INVALID_PRICE = UnpricedReason.INVALID_PRICE
# Half-up rounding makes monthly_from_cycle(p, m) > MAX_MONTHLY exactly when
# p >= (MAX_MONTHLY + half a cent) * m; these few-digit products are exact.
_MAX_CYCLE_PRICE: dict[Cycle, Decimal] = {c: (MAX_MONTHLY + _HALF_CENT) * c.months for c in Cycle}


#: What the observation cache keeps in place of a cell that is not a number: the text Hostwinds
#: sent there could be anything (an object with a password was seen), so it is not kept.
UNREADABLE_CELL = "[not a number]"


#: The longest price cell kept as sent. A real price is a dozen characters; a longer number is
#: rewritten without its trailing zeros if that makes it short ("9.99" then 20,000 zeros is 9.99),
#: else it becomes :data:`TOO_LONG_CELL`.
MAX_CELL_TEXT = 40
#: What a number too long to keep becomes: it parses as an invalid price, for that row only.
TOO_LONG_CELL = "[number too long]"


def bounded_cell(cell: PriceCell) -> PriceCell:
    """The cell with at most :data:`MAX_CELL_TEXT` characters: as sent when it is that short; a
    longer number exactly as it is, without its trailing zeros, when that is short; else
    :data:`TOO_LONG_CELL` (or, for text that is not a number, its first characters, which parse as
    an invalid price all the same). Exact: the value is never rounded."""
    if len(cell) <= MAX_CELL_TEXT:
        return cell
    text = cell.strip()
    if len(text) <= MAX_CELL_TEXT:
        return text
    if _NUMBER.fullmatch(text) is None:
        return text[:MAX_CELL_TEXT]
    mantissa, _, exponent = text.lower().partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    short = mantissa + (f"e{exponent}" if exponent else "")
    if len(short) <= MAX_CELL_TEXT and _NUMBER.fullmatch(short) is not None:
        return short
    return TOO_LONG_CELL


def cacheable_cell(cell: PriceCell) -> PriceCell:
    """The cell as the cache may keep it: a number or a blank as sent (bounded, see
    :func:`bounded_cell`), anything else as a marker.

    The marker parses as an invalid price, so a cached answer prices exactly as the fresh one did.
    """
    cell = bounded_cell(cell)
    text = cell.strip()
    if text == "" or _NUMBER.fullmatch(text) is not None:
        return cell
    return UNREADABLE_CELL


# The pure functions below are cached: a fleet repeats a handful of spellings and prices across
# thousands of instances, and a cache hit costs a fraction of parsing again.


def spelling_key(billingcycle: str) -> str:
    """A cycle spelling as compared: lower case, without spaces, ``-`` and ``_``."""
    return _SEPARATORS.sub("", billingcycle).lower()


def normalise_cycle(billingcycle: str | None, *, hourly: bool = False) -> Cycle | None:
    """Return the cycle ``billingcycle`` names (hourly if flagged), or None if it is unknown."""
    if hourly:
        return Cycle.HOURLY
    if billingcycle is None:
        return None
    # "Bi-Annually" normalises to "biannually", which is deliberately not a known name.
    return _CYCLES_BY_NAME.get(spelling_key(billingcycle))


@functools.lru_cache(maxsize=1024)
def _cycle_of(billingcycle: str | None, hourly: bool) -> Cycle | None:
    # Positional arguments: the cache key of a keyword call costs more to build.
    return normalise_cycle(billingcycle, hourly=hourly)


def parse_price_cell(cell: PriceCell | None) -> Decimal | UnpricedReason:
    """Return a positive price exactly as written, or why the cell is not one; never raises.

    A cell longer than :data:`MAX_CELL_TEXT` is read through :func:`bounded_cell` (a cache written
    before cells were bounded may hold one): the cache of parsed cells holds only short texts, so
    its memory stays bounded whatever Hostwinds sends.
    """
    if cell is not None and len(cell) > MAX_CELL_TEXT:
        cell = bounded_cell(cell)
    return _parse_short_cell(cell)


@functools.lru_cache(maxsize=8192)
def _parse_short_cell(cell: PriceCell | None) -> Decimal | UnpricedReason:
    if cell is None:
        return UnpricedReason.CYCLE_NOT_OFFERED
    text = cell.strip()
    if text == "":
        return UnpricedReason.CYCLE_NOT_OFFERED
    if _NUMBER.fullmatch(text) is None:
        return UnpricedReason.INVALID_PRICE
    try:
        value = Decimal(text)
    except decimal.InvalidOperation:  # an exponent beyond what Decimal can hold
        return UnpricedReason.INVALID_PRICE
    if value in _NOT_OFFERED_VALUES:
        return UnpricedReason.CYCLE_NOT_OFFERED
    if value < 0:
        return UnpricedReason.INVALID_PRICE
    return value


@functools.lru_cache(maxsize=8192)
def monthly_from_cycle(price: Decimal, months: int) -> Decimal:
    """Return ``price / months`` rounded once, half-up, to cents."""
    if months < 1 or not price.is_finite():
        raise ValueError("monthly_from_cycle needs a finite price and months >= 1")
    # Enough digits to keep at least the thousandths, independent of the caller's context.
    context = _context(max(price.adjusted(), 0) + 8)
    # ROUND_DOWN below the thousandths cannot move the quotient across a half cent, so the
    # quantize below rounds exactly as if the quotient were exact: one rounding, in effect.
    quotient = context.divide(price, Decimal(months))
    # HALF_UP: Finance rounds cents this way.
    return quotient.quantize(_CENT, rounding=decimal.ROUND_HALF_UP, context=context)


@functools.lru_cache(maxsize=64)
def _context(precision: int) -> decimal.Context:
    # Cached: building a Context per price costs more than the division it serves.
    return decimal.Context(
        prec=precision,
        rounding=decimal.ROUND_DOWN,
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
    )


def estimate_instance(
    instance: Instance,
    *,
    cycle_prices: Mapping[Cycle, PriceCell] | None,
    plan: Plan | None,
    aliases: Mapping[str, Cycle] | None = None,
    plan_missing: Unpriced | None = None,
    failed: tuple[Fallback, str] | None = None,
) -> Estimate | Unpriced:
    """Return the monthly estimate of one instance from its cycle prices, else its plan's price.

    ``failed`` says the service's cycle prices were asked and could not be used (an error
    envelope, an unreadable answer) and why: the price list prices the row with that
    ``fallback``; when it cannot either, the row is ``cycle_prices_unavailable``.

    ``aliases`` (spelling key -> cycle) name cycles for spellings that name none themselves; the
    estimate then carries the spelling as ``cycle_alias``. ``plan_missing`` says why ``plan`` is
    None when the price list has a row for it that could not be read (``plan_unreadable``,
    ``custom_plan``); without it a missing plan is ``plan_not_found``.
    """
    named = _named_cycle(instance, aliases)
    if isinstance(named, Unpriced):
        return named
    cycle, alias = named
    # Hourly has no API-visible rate: the plan's monthly price is the ceiling.
    priced_cycle = _MONTHLY if cycle is _HOURLY else cycle
    chosen = _cycle_price(instance, priced_cycle, cycle_prices, plan, plan_missing, failed)
    if isinstance(chosen, Unpriced):
        return chosen
    price, cell, source, fallback = chosen
    monthly = _monthly_in_range(price, cell, priced_cycle)
    if isinstance(monthly, Unpriced):
        return monthly
    return Estimate(
        monthly=monthly,
        source=source,
        cycle=cycle,
        cycle_price=price,
        months=priced_cycle.months,
        hourly_ceiling=cycle is _HOURLY,
        product_id=instance.product_id,
        product_name=instance.product_name or (plan.name if plan is not None else None),
        cycle_alias=alias,
        fallback=fallback,
    )


def _named_cycle(
    instance: Instance, aliases: Mapping[str, Cycle] | None
) -> tuple[Cycle, str | None] | Unpriced:
    """The instance's billing cycle, and the spelling an alias named it from (None: its own)."""
    cycle = _cycle_of(instance.billingcycle, instance.hourly)
    if cycle is None and aliases and instance.billingcycle is not None:
        cycle = aliases.get(spelling_key(instance.billingcycle))
        if cycle is not None:
            return cycle, instance.billingcycle
    if cycle is None:
        return Unpriced(
            reason=UnpricedReason.UNKNOWN_CYCLE,
            detail=f"instance {instance.serviceid} has no billing cycle"
            if instance.billingcycle is None
            else f"billing cycle {_quote(instance.billingcycle)} is not a known cycle",
        )
    return cycle, None


def _cycle_price(
    instance: Instance,
    priced_cycle: Cycle,
    cycle_prices: Mapping[Cycle, PriceCell] | None,
    plan: Plan | None,
    plan_missing: Unpriced | None,
    failed: tuple[Fallback, str] | None,
) -> tuple[Decimal, PriceCell | None, PriceSource, Fallback | None] | Unpriced:
    """The price of one ``priced_cycle``: the service's own cycle price, else the price list's.

    Returns the price, the cell it was read from, its source and, for the price list, why the
    service's own price was not used.
    """
    cell = cycle_prices.get(priced_cycle) if cycle_prices is not None else None
    parsed = parse_price_cell(cell)
    if isinstance(parsed, Decimal):
        return parsed, cell, _CYCLE_PRICES, None
    if parsed is _INVALID_PRICE:
        # Fail closed: the per-service price is the most specific; a wrong number is worse
        # than none, so a garbled one must not be papered over by the price list.
        return Unpriced(
            reason=parsed,
            detail=f"service {instance.serviceid} '{priced_cycle}' price is not a price ({_quote(cell)})",
        )
    fallback: Fallback | None = None
    if failed is not None:
        fallback = failed[0]
    elif cycle_prices is not None:
        fallback = Fallback.CYCLE_MISSING if cycle_prices else Fallback.CYCLE_PRICES_EMPTY
    listed = _from_plan(instance, plan, priced_cycle, plan_missing)
    if isinstance(listed, Unpriced):
        if failed is not None:
            # Neither source: the service's own failure is the reason, the list's the rest.
            return Unpriced(
                UnpricedReason.CYCLE_PRICES_UNAVAILABLE,
                f"{failed[1]}; the price list cannot price it either: {listed.detail}",
            )
        return listed
    price, listed_cell = listed
    return price, listed_cell, _PRICE_LIST, fallback


def _monthly_in_range(price: Decimal, cell: PriceCell | None, priced_cycle: Cycle) -> Decimal | Unpriced:
    """``price`` for ``priced_cycle`` as a monthly amount, or why it is not one to store."""
    # Checked before dividing so that a huge price (Decimal takes "1e999999") costs nothing.
    if price >= _MAX_CYCLE_PRICE[priced_cycle]:
        return Unpriced(
            reason=UnpricedReason.OUT_OF_RANGE,
            detail=f"'{priced_cycle}' price {_quote(cell)} is over {MAX_MONTHLY} a month",
        )
    monthly = monthly_from_cycle(price, priced_cycle.months)
    if monthly == 0:
        # Never store zero for a real plan.
        return Unpriced(
            reason=UnpricedReason.INVALID_PRICE,
            detail=f"'{priced_cycle}' price {_quote(cell)} is under a cent a month",
        )
    return monthly


def _from_plan(
    instance: Instance, plan: Plan | None, priced_cycle: Cycle, plan_missing: Unpriced | None
) -> tuple[Decimal, PriceCell | None] | Unpriced:
    """The plan's price (and its cell) for the cycle, or why the price list cannot price it."""
    if plan is None and plan_missing is not None:
        return plan_missing
    if plan is None:
        return Unpriced(
            reason=UnpricedReason.PLAN_NOT_FOUND,
            detail=f"instance {instance.serviceid} has no product_id"
            if instance.product_id is None
            else f"no price-list plan {instance.product_id}",
        )
    cell = plan.prices.get(priced_cycle)
    parsed = parse_price_cell(cell)
    if not isinstance(parsed, Decimal) and plan.custom:
        return Unpriced(
            reason=UnpricedReason.CUSTOM_PLAN,
            detail=f"plan {plan.id} is a custom plan priced per service; the price list has no "
            f"'{priced_cycle}' price for it",
        )
    if not isinstance(parsed, Decimal):
        verb = "has no" if parsed is UnpricedReason.CYCLE_NOT_OFFERED else "has an invalid"
        return Unpriced(
            reason=parsed,
            detail=f"plan {plan.id} {verb} '{priced_cycle}' price ({_quote(cell)})",
        )
    return parsed, cell


def price_row(
    row: VpsRow,
    instance: Instance | None,
    *,
    override: Decimal | None,
    cycle_prices: Mapping[Cycle, PriceCell] | None,
    plan: Plan | None,
    aliases: Mapping[str, Cycle] | None = None,
    plan_missing: Unpriced | None = None,
    failed: tuple[Fallback, str] | None = None,
) -> Estimate | Unpriced:
    """Return one row's estimate: a Finance override first, else its matched instance's price."""
    if override is not None:
        return Estimate(
            monthly=override,
            source=PriceSource.OVERRIDE,
            product_id=instance.product_id if instance is not None else None,
            product_name=instance.product_name if instance is not None else None,
        )
    instance_id = (row.hostwinds_instance_id or "").strip()
    if instance_id == "":
        return Unpriced(reason=UnpricedReason.NO_IDENTIFIER, detail="no hostwinds_instance_id")
    if instance is None:
        return Unpriced(
            reason=UnpricedReason.NOT_FOUND,
            detail=f"no Hostwinds instance {_quote(instance_id)}",
        )
    return estimate_instance(
        instance,
        cycle_prices=cycle_prices,
        plan=plan,
        aliases=aliases,
        plan_missing=plan_missing,
        failed=failed,
    )


def _quote(text: str | None) -> str:
    """Quote text from Hostwinds for a detail, cut short so a detail stays short."""
    if text is None:
        return "missing"
    # A cell may carry anything Hostwinds put there (one carried a root password).
    return repr(redact(text, limit=_DETAIL_TEXT_MAX))
