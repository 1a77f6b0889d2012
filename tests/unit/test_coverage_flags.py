"""A run that prices little says so: mostly_unpriced and nothing_matched, and /metrics shows them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from prometheus_client import generate_latest

from cost_sync.daemon.metrics import Metrics
from cost_sync.domain import flags
from cost_sync.domain.models import (
    Estimate,
    Instance,
    PriceSource,
    RowOutcome,
    RunReport,
    Unpriced,
    UnpricedReason,
    VpsRow,
)
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.settings import Settings


def outcome(n: int, result: Estimate | Unpriced, *, matched: bool = True) -> RowOutcome:
    """Row n, matched to service n on plan 50 + n (or not matched)."""
    row = VpsRow(id=uuid.uuid4(), hostwinds_instance_id=str(n), status="active", approximate_cost=None)
    instance = Instance(serviceid=n, product_id=50 + n) if matched else None
    return RowOutcome(row, instance, result)


PRICED = Estimate(monthly=Decimal("9.99"), source=PriceSource.PRICE_LIST)
MISSING = Unpriced(UnpricedReason.PLAN_NOT_FOUND, "no plan")
PENDING = Unpriced(UnpricedReason.PENDING, "budget")


def test_exactly_the_ratio_is_not_flagged_one_more_is() -> None:
    """Half of four unpriced at 0.5 passes; three of four is mostly_unpriced."""
    half = [outcome(1, PRICED), outcome(2, PRICED), outcome(3, MISSING), outcome(4, MISSING)]
    assert (
        flags.coverage_flags(half, instances_listed=4, max_unpriced_ratio=Decimal("0.5"), plan_key="id") == []
    )
    more = [outcome(1, PRICED), outcome(2, MISSING), outcome(3, MISSING), outcome(4, MISSING)]
    [flag] = flags.coverage_flags(more, instances_listed=4, max_unpriced_ratio=Decimal("0.5"), plan_key="id")
    assert flag.kind == "mostly_unpriced"
    assert flag.message.startswith("mostly_unpriced: 3 of 4 matched rows in scope are unpriced")
    assert "plan_join check" in flag.message


def test_pending_and_unmatched_rows_do_not_count() -> None:
    """Rows the budget did not reach keep their value for the next run; unmatched rows are no share."""
    outcomes = [
        outcome(1, PRICED),
        outcome(2, PENDING),
        outcome(3, PENDING),
        outcome(4, MISSING, matched=False),
    ]
    assert (
        flags.coverage_flags(outcomes, instances_listed=4, max_unpriced_ratio=Decimal("0.5"), plan_key="id")
        == []
    )


def test_plan_not_found_names_the_plan_key_that_would_join() -> None:
    """Every product_id is a rid: the fix is to set plan_key = "rid"."""
    outcomes = [outcome(n, MISSING) for n in range(1, 4)]
    [flag] = flags.coverage_flags(
        outcomes,
        instances_listed=3,
        max_unpriced_ratio=Decimal("0.5"),
        plan_key="id",
        plan_keys={"id": {101, 102}, "rid": {51, 52, 53}},
    )
    assert "matches the price list's `rid` for 3 of 3 and `id` for 0" in flag.message
    assert 'set [hostwinds] plan_key = "rid" (COST_SYNC_HOSTWINDS_PLAN_KEY=rid)' in flag.message


def test_nothing_matched_only_when_hostwinds_lists_instances() -> None:
    """No row matches any of 13 instances: nothing_matched; with no instances listed, no such flag."""
    unmatched = [outcome(1, Unpriced(UnpricedReason.NOT_FOUND, "x"), matched=False)]
    [flag] = flags.coverage_flags(
        unmatched, instances_listed=13, max_unpriced_ratio=Decimal("0.5"), plan_key="id"
    )
    assert flag.kind == "nothing_matched"
    assert "Hostwinds lists 13 instance(s)" in flag.message
    assert flags.coverage_flags([], instances_listed=13, max_unpriced_ratio=Decimal("0.5"), plan_key="id")
    assert (
        flags.coverage_flags([], instances_listed=0, max_unpriced_ratio=Decimal("0.5"), plan_key="id") == []
    )


def test_default_ratio_is_one_half() -> None:
    """[guard] max_unpriced_ratio defaults to 0.5."""
    assert Settings().guard.max_unpriced_ratio == Decimal("0.5")


async def test_metrics_show_the_last_runs_warnings_and_clear_them() -> None:
    """/metrics: cost_sync_run_warnings{kind} is 1 after a mostly_unpriced run and 0 after a clean one."""
    async with httpx.AsyncClient() as http:
        metrics = Metrics(HostwindsClient(http, "k", url="http://127.0.0.1:9/"))
    now = datetime.now(UTC)
    flagged = RunReport(
        run_id=uuid.uuid4(),
        trigger="schedule",
        outcome="succeeded",
        started_at=now,
        finished_at=now,
        warnings=["mostly_unpriced: ..."],
        warning_kinds=["mostly_unpriced"],
    )
    metrics.observe("schedule", flagged, full=True)
    text = generate_latest(metrics.registry).decode()
    assert 'cost_sync_run_warnings{kind="mostly_unpriced"} 1.0' in text
    assert 'cost_sync_run_warnings{kind="nothing_matched"} 0.0' in text
    metrics.observe("schedule", flagged.model_copy(update={"warnings": [], "warning_kinds": []}), full=True)
    assert 'cost_sync_run_warnings{kind="mostly_unpriced"} 0.0' in generate_latest(metrics.registry).decode()
