"""Pure guard decisions: which changes a run holds for a person, and when a run must apply nothing.

Guarantees: no I/O, no logging, no clock, no float. A change is held exactly when
``|new - base| > max_change_ratio * base`` (compared without dividing) for a positive base among:
the row's value; the last value cost-sync wrote, when the row holds null or zero now (someone
cleared it); and the row's anchor, the last approved value or the value it held a drift window
ago (so that small steps cannot add up unreviewed). A first price (cost-sync never priced the row)
and a Finance override are never held. The run-wide checks
compare with what the last good run saw and never refuse a run that has nothing to compare with.
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from cost_sync.domain.models import (
    Estimate,
    HeldChange,
    Instance,
    PriceSource,
    RowOutcome,
    Unpriced,
    VpsRow,
)

__all__ = [
    "Reference",
    "Refusal",
    "change_ratio",
    "check_plans",
    "check_unmatched",
    "hold_changes",
    "recheck",
]

_RATIO_PLACES = Decimal("0.0001")


def change_ratio(old: Decimal | None, new: Decimal) -> Decimal | None:
    """``|new - old| / old`` to four places, half-up; None when there is no positive old value."""
    if old is None or old <= 0:
        return None
    return (abs(new - old) / old).quantize(_RATIO_PLACES, rounding=decimal.ROUND_HALF_UP)


def _exceeds(old: Decimal, new: Decimal, max_change_ratio: Decimal) -> bool:
    return abs(new - old) > max_change_ratio * old


@dataclass(frozen=True, slots=True)
class Reference:
    """What cost-sync's own history says of a row, beside the value the row holds now."""

    #: The last value cost-sync wrote to the row (None: it never priced the row).
    last_written: Decimal | None = None
    #: The last approved value, or the value the row held a drift window ago (None: no history).
    anchor: Decimal | None = None
    #: True when ``anchor`` is an approved value.
    anchor_approved: bool = False


def _bases(old: Decimal | None, reference: Reference | None) -> list[tuple[Decimal, str]]:
    """The values a new price is compared with, and how each is named in a held change's reason."""
    bases: list[tuple[Decimal, str]] = []
    if old is not None and old > 0:
        bases.append((old, ""))
    elif reference is not None and reference.last_written is not None and reference.last_written > 0:
        # Cleared (NULL or 0.00) after cost-sync priced it: not a first price.
        bases.append(
            (
                reference.last_written,
                f"the last value cost-sync wrote, the row holds {'NULL' if old is None else old} now",
            )
        )
    if reference is not None and reference.anchor is not None and reference.anchor > 0:
        what = (
            "the last approved value"
            if reference.anchor_approved
            else "the value at the start of the drift window"
        )
        bases.append((reference.anchor, what))
    return bases


def hold_changes(
    outcomes: Iterable[RowOutcome],
    *,
    max_change_ratio: Decimal,
    accept: bool = False,
    references: Mapping[uuid.UUID, Reference] | None = None,
) -> list[HeldChange]:
    """The changes among ``outcomes`` to hold instead of applying (none when ``accept``).

    ``references`` (by row id) hold what cost-sync's history says of each row; without one a row
    is compared with its value only.
    """
    if accept:
        return []
    references = references or {}
    held: list[HeldChange] = []
    for outcome in outcomes:
        result, old = outcome.result, outcome.row.approximate_cost
        if not isinstance(result, Estimate) or not outcome.changed:
            continue
        # Finance set an override on purpose.
        if result.source is PriceSource.OVERRIDE:
            continue
        for base, what in _bases(old, references.get(outcome.row.id)):
            if not _exceeds(base, result.monthly, max_change_ratio):
                continue
            ratio = change_ratio(base, result.monthly)
            assert ratio is not None  # base > 0
            reason = (
                f"{base} -> {result.monthly} changes the value by {ratio * 100:.2f}%, "
                f"over max_change_ratio {max_change_ratio}"
                if not what
                else f"{base} ({what}) -> {result.monthly} changes it by {ratio * 100:.2f}%, "
                f"over max_change_ratio {max_change_ratio}"
            )
            held.append(
                HeldChange(
                    row_id=outcome.row.id,
                    hostwinds_instance_id=outcome.row.hostwinds_instance_id,
                    old=old,
                    proposed=result,
                    ratio=ratio,
                    reason=reason,
                )
            )
            break
    return held


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a run applies nothing: what it saw against the last good run."""

    seen: int
    lost: int
    ratio: Decimal
    message: str


def check_unmatched(
    matches: Iterable[tuple[VpsRow, Instance | None]],
    *,
    max_unmatched_ratio: Decimal,
    last_run: str,
) -> Refusal | None:
    """Refuse when more than the allowed share of rows that matched last time match nothing now."""
    # seen[0] is the matched flag of RowState.key(); a row never seen is not counted.
    before = [instance is not None for row, instance in matches if row.seen is not None and row.seen[0]]
    if not before:
        return None
    lost = before.count(False)
    if not lost or lost <= max_unmatched_ratio * len(before):
        return None
    ratio = Decimal(lost) / Decimal(len(before))
    return Refusal(
        seen=len(before),
        lost=lost,
        ratio=ratio,
        message=f"{lost} of {len(before)} rows in scope that matched a Hostwinds instance at the "
        f"last good run ({last_run}) match none now ({ratio:.1%} > max_unmatched_ratio "
        f"{max_unmatched_ratio}); nothing was applied",
    )


def check_plans(
    plans_before: Sequence[int] | None,
    plans_now: Iterable[int],
    *,
    max_unmatched_ratio: Decimal,
    last_run: str,
) -> Refusal | None:
    """Refuse when the price list lost more than the allowed share of the plans in use last time."""
    if not plans_before:
        return None
    present = set(plans_now)
    before = sorted(set(plans_before))
    lost = [plan for plan in before if plan not in present]
    if not lost or len(lost) <= max_unmatched_ratio * len(before):
        return None
    ratio = Decimal(len(lost)) / Decimal(len(before))
    shown = ", ".join(str(p) for p in lost[:10]) + (" ..." if len(lost) > 10 else "")
    return Refusal(
        seen=len(before),
        lost=len(lost),
        ratio=ratio,
        message=f"the price list lost {len(lost)} of the {len(before)} plans in use at the last good run "
        f"({last_run}): {shown} ({ratio:.1%} > max_unmatched_ratio {max_unmatched_ratio}); "
        "nothing was applied",
    )


def recheck(
    *,
    old: Decimal | None,
    proposed: Decimal,
    current: Decimal | None,
    now: Estimate | Unpriced | None,
) -> str | None:
    """Why approving a held change would be stale now, or None when it still stands.

    ``current`` is the row's stored value now; ``now`` what a run would compute now (None: the
    row is no longer in scope).
    """
    if now is None:
        return "the row is no longer in scope"
    if current != old:
        return f"the row's value is {current} now, not {old} as when the change was held"
    if isinstance(now, Unpriced):
        return f"a run would not price it now ({now.reason.value}: {now.detail})"
    if now.monthly != proposed:
        return (
            f"a run would compute {now.monthly} now, not the held {proposed}; "
            "the next run replaces the held change"
        )
    return None
