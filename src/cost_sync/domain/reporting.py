"""Pure report aggregation: the fleet's totals, unpriced rows, held changes and drift, from stored rows.

Guarantees: no I/O, no logging, no clock, no float. Amounts are Decimal sums of the stored values
(a row without a value adds nothing and is counted as such, never as zero), shown as strings
with two decimals; every group's totals add up to the fleet total.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cost_sync.domain.redact import SafeCsvWriter

__all__ = [
    "Change",
    "HeldRow",
    "LastFleetRun",
    "ReportRow",
    "TenantDay",
    "amount",
    "build_report",
    "fleet_daily",
    "largest_changes",
    "report_csv",
    "runs_in_period",
    "tenant_series",
]

_CENT = Decimal("0.01")
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class LastFleetRun:
    """The last successful whole-fleet sync, and the lines it flagged for a person to look at."""

    run_id: uuid.UUID
    trigger: str
    finished: datetime
    warnings: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The run as JSON-ready values."""
        return {
            "run_id": str(self.run_id),
            "trigger": self.trigger,
            "finished": self.finished.isoformat(),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One row in scope with what the report needs: its values, its latest basis, its kept state."""

    row_id: uuid.UUID
    hostwinds_instance_id: str | None
    status: str | None
    region: str | None
    approximate_cost: Decimal | None
    monthly_cost: Decimal | None
    source: str | None = None
    cycle: str | None = None
    product_id: int | None = None
    product_name: str | None = None
    unpriced_reason: str | None = None
    unpriced_detail: str | None = None
    upgrade_available: bool = False
    #: The value is a provisional price-list estimate its own cycle prices have not refined yet.
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class HeldRow:
    """One held change as ``cost-sync held`` and the report list it."""

    row_id: uuid.UUID
    hostwinds_instance_id: str | None
    old: Decimal | None
    proposed: Decimal
    ratio: Decimal
    reason: str
    since: datetime
    run_id: uuid.UUID
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        """The held change as JSON-ready values."""
        return {
            "row_id": str(self.row_id),
            "hostwinds_instance_id": self.hostwinds_instance_id,
            "old": None if self.old is None else amount(self.old),
            "proposed": amount(self.proposed),
            "ratio": str(self.ratio),
            "reason": self.reason,
            "since": self.since.isoformat(),
            "run_id": str(self.run_id),
            "source": self.source,
        }


def amount(value: Decimal) -> str:
    """An amount as a string with exactly two decimals."""
    return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def _group(rows: Iterable[ReportRow], key: Callable[[ReportRow], str]) -> dict[str, dict[str, Any]]:
    totals: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    without: dict[str, int] = {}
    for row in rows:
        k = key(row)
        counts[k] = counts.get(k, 0) + 1
        totals.setdefault(k, Decimal("0.00"))
        if row.approximate_cost is None:
            without[k] = without.get(k, 0) + 1
        else:
            totals[k] += row.approximate_cost
    return {
        k: {"total": amount(totals[k]), "rows": counts[k], "rows_without_value": without.get(k, 0)}
        for k in sorted(totals)
    }


def _name(value: object) -> str:
    return UNKNOWN if value is None or value == "" else str(value)


def build_report(
    rows: Sequence[ReportRow],
    held: Sequence[HeldRow],
    *,
    oldest_observation: datetime | None,
    generated_at: datetime,
    last_run: LastFleetRun | None = None,
) -> dict[str, Any]:
    """The report as JSON-ready values (see the module docstring for what it guarantees)."""
    total = sum((r.approximate_cost for r in rows if r.approximate_cost is not None), Decimal("0.00"))
    by_plan = _group(rows, lambda r: _name(r.product_id))
    names = {_name(r.product_id): r.product_name for r in rows if r.product_name}
    for key, entry in by_plan.items():
        entry["name"] = names.get(key)
    drift = []
    for r in rows:
        if r.approximate_cost is None or r.monthly_cost is None or r.approximate_cost == r.monthly_cost:
            continue
        difference = r.approximate_cost - r.monthly_cost
        percent = (
            None
            if r.monthly_cost == 0
            else (difference / r.monthly_cost * 100).quantize(_CENT, ROUND_HALF_UP)
        )
        drift.append((abs(difference), r, difference, percent))
    drift.sort(key=lambda d: (-d[0], str(d[1].row_id)))
    return {
        "generated_at": generated_at.isoformat(),
        "rows_in_scope": len(rows),
        "rows_without_value": sum(1 for r in rows if r.approximate_cost is None),
        "provisional": sum(1 for r in rows if r.provisional and r.approximate_cost is not None),
        "fleet_monthly_total": amount(total),
        "by_status": _group(rows, lambda r: _name(r.status)),
        "by_plan": by_plan,
        "by_cycle": _group(rows, lambda r: _name(r.cycle)),
        "by_source": _group(rows, lambda r: _name(r.source)),
        "by_region": _group(rows, lambda r: _name(r.region)),
        "unpriced": [
            {
                "row_id": str(r.row_id),
                "hostwinds_instance_id": r.hostwinds_instance_id,
                "reason": r.unpriced_reason,
                "detail": r.unpriced_detail,
                "kept_value": None if r.approximate_cost is None else amount(r.approximate_cost),
            }
            for r in rows
            if r.unpriced_reason is not None
        ],
        "held": [h.as_json() for h in held],
        "drift": [
            {
                "row_id": str(r.row_id),
                "hostwinds_instance_id": r.hostwinds_instance_id,
                "approximate_cost": amount(r.approximate_cost) if r.approximate_cost is not None else None,
                "monthly_cost": amount(r.monthly_cost) if r.monthly_cost is not None else None,
                "difference": amount(difference),
                "percent": None if percent is None else str(percent),
            }
            for _, r, difference, percent in drift
        ],
        "oldest_observation": None if oldest_observation is None else oldest_observation.isoformat(),
        # An observation dated in the future (a clock that ran ahead) is of unknown age, shown as 0
        # and flagged: the next run asks it again.
        "oldest_observation_age_seconds": None
        if oldest_observation is None
        else max(0, int((generated_at - oldest_observation).total_seconds())),
        "oldest_observation_in_future": oldest_observation is not None and oldest_observation > generated_at,
        "upgrade_available": [
            {"row_id": str(r.row_id), "hostwinds_instance_id": r.hostwinds_instance_id}
            for r in rows
            if r.upgrade_available
        ],
        "last_run": None if last_run is None else last_run.as_json(),
    }


def report_csv(report: dict[str, Any]) -> str:
    """The report as one CSV table: section, key, amount, rows, detail."""
    out = io.StringIO()
    # Cells a spreadsheet would run as a formula (a product name "=HYPERLINK(...)", a row id
    # "=1+1") are neutralised; numbers stay numbers.
    writer = SafeCsvWriter(out)
    writer.writerow(["section", "key", "amount", "rows", "detail"])
    writer.writerow(["fleet_monthly_total", "", report["fleet_monthly_total"], report["rows_in_scope"], ""])
    for section in ("by_status", "by_plan", "by_cycle", "by_source", "by_region"):
        for key, entry in report[section].items():
            detail = entry.get("name") or ""
            writer.writerow([section, key, entry["total"], entry["rows"], detail])
    for item in report["unpriced"]:
        writer.writerow(
            [
                "unpriced",
                item["hostwinds_instance_id"] or item["row_id"],
                item["kept_value"] or "",
                1,
                f"{item['reason']}: {item['detail']}",
            ]
        )
    for item in report["held"]:
        writer.writerow(
            [
                "held",
                item["hostwinds_instance_id"] or item["row_id"],
                item["proposed"],
                1,
                f"old {item['old']}, ratio {item['ratio']}, since {item['since']}",
            ]
        )
    for item in report["drift"]:
        writer.writerow(
            [
                "drift",
                item["hostwinds_instance_id"] or item["row_id"],
                item["difference"],
                1,
                f"approximate_cost {item['approximate_cost']}, monthly_cost {item['monthly_cost']}, "
                f"{item['percent']}%",
            ]
        )
    for item in report["upgrade_available"]:
        writer.writerow(["upgrade_available", item["hostwinds_instance_id"] or item["row_id"], "", 1, ""])
    writer.writerow(
        [
            "oldest_observation",
            report["oldest_observation"] or "",
            "",
            "",
            report["oldest_observation_age_seconds"],
        ]
    )
    last = report["last_run"]
    if last is not None:
        for warning in last["warnings"]:
            writer.writerow(["warning", last["run_id"], "", "", warning])
    return out.getvalue()


# -- over time (`report --html`) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One history entry: a row's value changed by a run (or an approval)."""

    run_id: uuid.UUID
    row_id: uuid.UUID
    hostwinds_instance_id: str | None
    old: Decimal | None
    new: Decimal
    at: datetime
    trigger: str | None = None
    approved: bool = False

    @property
    def difference(self) -> Decimal:
        """What the change added to the fleet's total (from no value: the whole new value)."""
        return self.new - (self.old or Decimal("0.00"))


@dataclass(frozen=True, slots=True)
class TenantDay:
    """One tenant's (or the unallocated bucket's, tenant_ref None) attribution on one day."""

    day: date
    tenant_ref: str | None
    tenant_name: str | None
    total: Decimal


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def fleet_daily(
    report: dict[str, Any], changes: Sequence[Change], *, since: date, until: date
) -> list[dict[str, Any]]:
    """The fleet's monthly total at the end of each day from ``since`` to ``until`` (UTC dates).

    Walked back from the report's total through the history of the rows in scope now: a day's
    total is today's less every change made after it, so the last point is the report's
    ``fleet_monthly_total`` exactly. A change from no value leaves that row without a value before
    it (counted in ``rows_without_value``, never as zero).
    """
    total = Decimal(report["fleet_monthly_total"])
    without = int(report["rows_without_value"])
    by_day: dict[date, list[Change]] = {}
    for change in changes:
        by_day.setdefault(change.at.date(), []).append(change)
    points: list[dict[str, Any]] = []
    for day in reversed(_days(since, until)):
        made = by_day.get(day, [])
        points.append(
            {
                "day": day.isoformat(),
                "total": amount(total),
                "rows_without_value": without,
                "changes": len(made),
                "runs": sorted({str(c.run_id) for c in made}),
            }
        )
        total -= sum((c.difference for c in made), Decimal("0.00"))
        without += sum(1 for c in made if c.old is None)
    points.reverse()
    return points


def runs_in_period(changes: Sequence[Change]) -> list[dict[str, Any]]:
    """The runs that changed the total, oldest first: rows changed and what they added to it."""
    runs: dict[uuid.UUID, list[Change]] = {}
    for change in changes:
        runs.setdefault(change.run_id, []).append(change)
    ordered = sorted(runs.items(), key=lambda item: (min(c.at for c in item[1]), str(item[0])))
    return [
        {
            "run_id": str(run_id),
            "trigger": made[0].trigger or ("approve" if any(c.approved for c in made) else UNKNOWN),
            "at": min(c.at for c in made).isoformat(),
            "rows_changed": len(made),
            "difference": amount(sum((c.difference for c in made), Decimal("0.00"))),
        }
        for run_id, made in ordered
    ]


def largest_changes(changes: Sequence[Change], limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` changes that moved the total most (either way), largest first."""
    ordered = sorted(changes, key=lambda c: (-abs(c.difference), c.at, str(c.row_id)))
    return [
        {
            "row_id": str(c.row_id),
            "hostwinds_instance_id": c.hostwinds_instance_id,
            "old": None if c.old is None else amount(c.old),
            "new": amount(c.new),
            "difference": amount(c.difference),
            "at": c.at.isoformat(),
            "run_id": str(c.run_id),
            "approved": c.approved,
        }
        for c in ordered[:limit]
    ]


def tenant_series(days: Sequence[TenantDay], attribution: dict[str, Any] | None) -> dict[str, Any]:
    """Each tenant's total per day with a snapshot, the unallocated share as its own series.

    ``attribution`` (``attribution --json``, the picture now) stands for its own day, replacing a
    stored snapshot of that day. Keys are tenant ids, ``"unallocated"`` for idle capacity; a
    tenant absent from a day's snapshot had no share that day (0.00).
    """
    per_day: dict[date, dict[str, Decimal]] = {}
    names: dict[str, str | None] = {}
    for d in days:
        key = d.tenant_ref or "unallocated"
        per_day.setdefault(d.day, {})[key] = d.total
        if d.tenant_ref is not None:
            names[key] = d.tenant_name
    if attribution is not None:
        today = datetime.fromisoformat(attribution["generated_at"]).date()
        now = {t["tenant_id"]: Decimal(t["total"]) for t in attribution["tenants"]}
        now["unallocated"] = Decimal(attribution["unallocated"]["total"])
        per_day[today] = now
        names |= {t["tenant_id"]: t["tenant_name"] for t in attribution["tenants"]}
    ordered_days = sorted(per_day)
    if not ordered_days:
        return {"days": [], "series": []}
    keys = sorted(names, key=lambda k: (-(per_day[ordered_days[-1]].get(k, Decimal(0))), k))
    if any("unallocated" in v for v in per_day.values()):
        keys.append("unallocated")
    return {
        "days": [d.isoformat() for d in ordered_days],
        "series": [
            {
                "key": key,
                "name": "unallocated (idle)" if key == "unallocated" else names.get(key) or key,
                "totals": [amount(per_day[d].get(key, Decimal("0.00"))) for d in ordered_days],
            }
            for key in keys
        ],
    }
