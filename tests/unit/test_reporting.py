"""Report aggregation: totals add up, unknown values are counted not summed as zero, drift is ordered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cost_sync.domain.reporting import ReportRow, build_report, report_csv

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def row(cost: str | None, monthly: str | None = None, **kw: object) -> ReportRow:
    """A row in scope with this stored value and Finance's monthly_cost."""
    return ReportRow(
        row_id=uuid.uuid4(),
        hostwinds_instance_id=str(kw.pop("hw", "1")),
        status=str(kw.pop("status", "active")),
        region=kw.pop("region", None),  # type: ignore[arg-type]
        approximate_cost=None if cost is None else Decimal(cost),
        monthly_cost=None if monthly is None else Decimal(monthly),
        **kw,  # type: ignore[arg-type]
    )


def test_groups_add_up_and_unknown_values_are_counted_not_summed() -> None:
    """A null value adds nothing and shows in rows_without_value; every grouping sums to the total."""
    rows = [
        row("9.99", source="price_list", cycle="monthly", product_id=101, region="us"),
        row(
            "3.33",
            source="cycle_prices",
            cycle="annually",
            product_id=102,
            region="eu",
            status="provisioning",
        ),
        row(None, unpriced_reason="not_found", unpriced_detail="gone"),
    ]
    report = build_report(rows, [], oldest_observation=NOW - timedelta(hours=2), generated_at=NOW)
    assert report["fleet_monthly_total"] == "13.32"
    assert report["rows_without_value"] == 1
    for key in ("by_status", "by_plan", "by_cycle", "by_source", "by_region"):
        assert sum(Decimal(g["total"]) for g in report[key].values()) == Decimal("13.32")
    assert report["by_source"]["unknown"] == {"total": "0.00", "rows": 1, "rows_without_value": 1}
    assert report["unpriced"][0]["kept_value"] is None
    assert report["oldest_observation_age_seconds"] == 7200


def test_drift_is_largest_first_with_percentages() -> None:
    """Rows whose value differs from monthly_cost, by absolute difference; a zero monthly_cost has no %."""
    rows = [
        row("10.00", "10.00", hw="same"),
        row("10.00", "12.50", hw="small"),
        row("30.00", "10.00", hw="large"),
        row("5.00", "0.00", hw="zero"),
        row(None, "7.00", hw="unknown"),
    ]
    drift = build_report(rows, [], oldest_observation=None, generated_at=NOW)["drift"]
    assert [(d["hostwinds_instance_id"], d["difference"], d["percent"]) for d in drift] == [
        ("large", "20.00", "200.00"),
        ("zero", "5.00", None),
        ("small", "-2.50", "-20.00"),
    ]


def test_csv_amounts_have_two_decimals() -> None:
    """Every amount in the CSV is written with exactly two decimals."""
    text = report_csv(build_report([row("9.9", "9")], [], oldest_observation=None, generated_at=NOW))
    assert "fleet_monthly_total,,9.90,1," in text
    assert "drift,1,0.90,1," in text
