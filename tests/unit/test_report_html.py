"""The HTML report's pure parts: history walked back, tenant series, the page from given data."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cost_sync.cli import report_html
from cost_sync.domain.reporting import Change, TenantDay, fleet_daily, largest_changes, tenant_series

pytest.importorskip("matplotlib")

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RUN_A, RUN_B = uuid.UUID(int=1), uuid.UUID(int=2)
ROW_1, ROW_2 = uuid.UUID(int=11), uuid.UUID(int=12)


def change(run: uuid.UUID, row: uuid.UUID, old: str | None, new: str, days_ago: int) -> Change:
    return Change(
        run_id=run,
        row_id=row,
        hostwinds_instance_id=str(row.int),
        old=None if old is None else Decimal(old),
        new=Decimal(new),
        at=NOW - timedelta(days=days_ago),
        trigger="scheduled",
    )


CHANGES = [change(RUN_A, ROW_1, None, "10.00", 5), change(RUN_B, ROW_2, "7.50", "5.25", 2)]


def test_history_is_walked_back_from_todays_total() -> None:
    """Today is the report's total; each earlier day removes the changes made after it."""
    report = {"fleet_monthly_total": "30.25", "rows_without_value": 0}
    points = fleet_daily(report, CHANGES, since=date(2026, 3, 1), until=NOW.date())
    assert points[0]["day"] == "2026-03-01"
    assert len(points) == 10
    by_day = {p["day"]: (p["total"], p["rows_without_value"], p["changes"]) for p in points}
    assert by_day["2026-03-10"] == ("30.25", 0, 0)
    assert by_day["2026-03-08"] == ("30.25", 0, 1)  # RUN_B: -2.25 that day
    assert by_day["2026-03-07"] == ("32.50", 0, 0)
    assert by_day["2026-03-05"] == ("32.50", 0, 1)  # RUN_A: ROW_1 from no value to 10.00
    assert by_day["2026-03-04"] == ("22.50", 1, 0)
    assert by_day["2026-03-01"] == ("22.50", 1, 0)


def test_largest_changes_either_way_first() -> None:
    largest = largest_changes([*CHANGES, change(RUN_B, uuid.UUID(int=13), "1.00", "1.01", 2)], limit=2)
    assert [(c["old"], c["new"], c["difference"]) for c in largest] == [
        (None, "10.00", "10.00"),
        ("7.50", "5.25", "-2.25"),
    ]


def test_tenant_series_has_unallocated_last_and_now_for_today() -> None:
    days = [
        TenantDay(date(2026, 3, 8), "t1", "Acme", Decimal("4.00")),
        TenantDay(date(2026, 3, 8), None, None, Decimal("1.00")),
        TenantDay(date(2026, 3, 10), "t1", "Acme", Decimal("9.99")),  # replaced by the picture now
    ]
    attribution = {
        "generated_at": NOW.isoformat(),
        "tenants": [
            {"tenant_id": "t1", "tenant_name": "Acme", "total": "5.00"},
            {"tenant_id": "t2", "tenant_name": "Beta", "total": "6.00"},
        ],
        "unallocated": {"total": "2.00"},
    }
    series = tenant_series(days, attribution)
    assert series["days"] == ["2026-03-08", "2026-03-10"]
    assert [(s["key"], s["totals"]) for s in series["series"]] == [
        ("t2", ["0.00", "6.00"]),
        ("t1", ["4.00", "5.00"]),
        ("unallocated", ["1.00", "2.00"]),
    ]
    assert tenant_series([], None) == {"days": [], "series": []}


def page_data(tenants: int, name: str = "Tenant") -> dict[str, Any]:
    """html_data's shape, made up."""
    attribution_tenants = [
        {
            "tenant_id": f"00000000-0000-0000-0000-{n:012d}",
            "tenant_name": f"{name} {n}",
            "vps_cost": f"{n}.00",
            "ip_cost": "0.00",
            "total": f"{n}.00",
            "vps_count": 1,
            "ip_count": 1,
            "unpriced_vps": 0,
        }
        for n in range(1, tenants + 1)
    ]
    total = sum(range(1, tenants + 1))
    attribution = {
        "tenants": attribution_tenants,
        "unallocated": {"vps_cost": "1.00", "ip_cost": "0.00", "total": "1.00", "by_vps": []},
        "fleet_monthly_total": f"{total + 1}.00",
        "allocated": f"{total}.00",
        "check": {"balanced": True, "line": "check: balanced"},
        "generated_at": NOW.isoformat(),
    }
    group = {"k": {"total": "3.00", "rows": 1, "rows_without_value": 0, "name": None}}
    report = {
        "generated_at": NOW.isoformat(),
        "rows_in_scope": 1,
        "rows_without_value": 0,
        "provisional": 0,
        "fleet_monthly_total": "30.25",
        **{k: group for k in ("by_status", "by_plan", "by_cycle", "by_source", "by_region")},
        "unpriced": [],
        "held": [],
        "drift": [],
        "oldest_observation": None,
        "oldest_observation_age_seconds": None,
        "oldest_observation_in_future": False,
        "upgrade_available": [],
        "last_run": None,
    }
    return {
        "since": "2026-03-01",
        "report": report,
        "attribution": attribution,
        "attribution_error": None,
        "fleet_daily": fleet_daily(report, CHANGES, since=date(2026, 3, 1), until=NOW.date()),
        "runs": [],
        "tenants_over_time": tenant_series([], attribution),
        "largest_changes": largest_changes(CHANGES),
        "explanations": {str(ROW_1): ["row <1>"], str(ROW_2): ["row 2"]},
        "provisional_rows": [],
        "statuses": ["active"],
        "keep_days": 400,
    }


def test_many_tenants_are_drawn_as_the_largest_and_the_rest() -> None:
    """Charts stay readable with 40 tenants: eleven by name and "29 other tenants"; tables list all."""
    data = page_data(40)
    data["report"]["by_region"] = {
        f"r{n}": {"total": f"{n}.00", "rows": 1, "rows_without_value": 0} for n in range(30)
    }
    page = report_html.render_page(data)
    assert "29 other tenants" in page
    assert "19 others" in page  # regions 0 to 18 folded: 0+1+...+18 = 171.00 over 19 rows
    assert "$171.00 · 19 rows" in page
    assert page.count('data-path="[&quot;tenants&quot;, 39, &quot;total&quot;]"') == 1
    assert "Tenant 40" in page


def test_the_page_escapes_what_it_is_given() -> None:
    page = report_html.render_page(page_data(2, name="<b>x</b>"))
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "row &lt;1&gt;" in page


def test_without_matplotlib_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from cost_sync.errors import ConfigError

    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"pip install 'cost-sync\[report\]'") as error:
        report_html.require_matplotlib()
    assert error.value.exit_code == 2
