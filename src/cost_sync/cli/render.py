"""Text and JSON views of a run for people and scripts; pure formatting, no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from cost_sync.domain.models import Estimate, HeldChange, RowOutcome, RunReport, Unpriced, UnpricedReason
from cost_sync.domain.redact import terminal_text


def money(value: Decimal | None) -> str:
    """``$1,234.50``, or ``-`` for an unknown value."""
    return "-" if value is None else f"${value:,.2f}"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain left-aligned text table."""
    # Escaped first, so that text from elsewhere (a product name, a tenant name) cannot move the
    # cursor or break a row over two lines, and the columns line up with what is shown.
    headers = [terminal_text(h) for h in headers]
    rows = [[terminal_text(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def _row_name(outcome: RowOutcome) -> str:
    return outcome.row.hostwinds_instance_id or str(outcome.row.id)


def summary(report: RunReport) -> list[str]:
    """The run's counts as a short two-column table."""
    priced = sum(report.priced_by_source.values())
    unpriced = sum(report.unpriced_by_reason.values())
    calls = sum(report.hostwinds_calls.values())
    head = "dry run (nothing written)" if report.dry_run else report.outcome
    lines = [f"cost-sync run {report.run_id} ({report.trigger}): {head} in {report.duration_seconds:.2f} s"]
    pairs = [
        ("rows in scope", str(report.rows_in_scope), ""),
        ("matched at Hostwinds", str(report.matched), ""),
        ("priced", str(priced), _counts(report.priced_by_source)),
        (
            "provisional",
            str(report.provisional),
            "price-list estimates for rows with no value; their own prices refine them",
        ),
        (
            "updated" if not report.dry_run else "would update",
            str(report.changed if report.dry_run else report.updated),
            "",
        ),
        ("unchanged", str(report.unchanged), ""),
        ("held for approval", str(report.held), "over [guard] max_change_ratio" if report.held else ""),
        ("unpriced (value kept)", str(unpriced), _counts(report.unpriced_by_reason)),
        ("Hostwinds calls", str(calls), _counts(report.hostwinds_calls)),
        ("cached prices used", str(report.price_cache.hits), ""),
        (
            "prices asked",
            str(report.price_cache.asked),
            _counts({k: v for k, v in report.price_cache.reasons.items() if v}),
        ),
        ("fleet monthly total", f"{money(report.total_before)} -> {money(report.total_after)}", ""),
        (
            "plan name mismatches",
            str(report.plan_names.get("disagree", 0)),
            f"price-list name vs product_name; {report.plan_names.get('agree', 0)} agree",
        ),
    ]
    for label, value, detail in pairs:
        lines.append(f"  {label:<22} {value:>6}" + (f"  ({detail})" if detail else ""))
    lines += [f"  warning: {warning}" for warning in report.warnings]
    if report.price_cache.pending:
        lines.append(
            f"  {report.price_cache.pending} services pending: the run's time budget ran out before "
            "they were asked; their rows keep their value and the next run continues"
        )
    return lines


def unpriced_rows(outcomes: Sequence[RowOutcome]) -> list[str]:
    """The unpriced rows with their reasons, or nothing when every row was priced."""
    # Pending rows are counted in the summary: a budgeted cold run can leave thousands.
    rows = [
        [_row_name(o), o.result.reason.value, o.result.detail]
        for o in outcomes
        if isinstance(o.result, Unpriced) and o.result.reason is not UnpricedReason.PENDING
    ]
    if not rows:
        return []
    return ["", "unpriced rows (their stored value is left as it was):"] + [
        "  " + line for line in table(["instance", "reason", "detail"], rows)
    ]


def held_changes(held: Sequence[HeldChange]) -> list[str]:
    """The changes a run held (old value kept), or nothing when none was held."""
    if not held:
        return []
    rows = [
        [
            h.hostwinds_instance_id or str(h.row_id),
            money(h.old),
            money(h.proposed.monthly),
            str(h.ratio),
            h.reason,
        ]
        for h in held
    ]
    return [
        "",
        f"held for approval ({len(rows)}; old values kept; `cost-sync held`, `cost-sync approve`):",
    ] + ["  " + line for line in table(["instance", "old", "proposed", "ratio", "reason"], rows)]


def _held_json(held: Sequence[HeldChange]) -> dict[str, Any]:
    return {
        "count": len(held),
        "rows": [
            {
                "id": str(h.row_id),
                "hostwinds_instance_id": h.hostwinds_instance_id,
                "old": None if h.old is None else str(h.old),
                "proposed": str(h.proposed.monthly),
                "ratio": str(h.ratio),
                "reason": h.reason,
                "source": h.proposed.source.value,
            }
            for h in held
        ],
    }


def changes(outcomes: Sequence[RowOutcome], held: Sequence[HeldChange] = ()) -> list[str]:
    """Each changed row: old -> new and where the price came from."""
    held_ids = {h.row_id for h in held}
    rows = [
        [
            _row_name(o),
            money(o.row.approximate_cost),
            money(o.result.monthly),
            o.result.source.value
            + (f" (cycle alias {o.result.cycle_alias!r})" if o.result.cycle_alias else "")
            + (f" (fallback {o.result.fallback.value})" if o.result.fallback else "")
            + (" (provisional)" if o.result.provisional else ""),
        ]
        for o in outcomes
        if isinstance(o.result, Estimate) and o.changed and o.row.id not in held_ids
    ]
    if not rows:
        return ["", "no changes"]
    return ["", f"changes ({len(rows)}):"] + [
        "  " + line for line in table(["instance", "old", "new", "source"], rows)
    ]


def as_json(report: RunReport, outcomes: Sequence[RowOutcome], held: Sequence[HeldChange] = ()) -> str:
    """The RunReport as JSON (money as strings), with the changed, held and unpriced rows."""
    held_ids = {h.row_id for h in held}
    data: dict[str, Any] = report.model_dump(mode="json")
    data["held"] = _held_json(held)
    data["duration_seconds"] = round(report.duration_seconds, 3)
    data["changes"] = [
        {
            "id": str(o.row.id),
            "hostwinds_instance_id": o.row.hostwinds_instance_id,
            "old": None if o.row.approximate_cost is None else str(o.row.approximate_cost),
            "new": str(o.result.monthly),
            "source": o.result.source.value,
            "cycle": o.result.cycle.value if o.result.cycle else None,
            "cycle_price": None if o.result.cycle_price is None else str(o.result.cycle_price),
            "hourly_ceiling": o.result.hourly_ceiling,
            "cycle_alias": o.result.cycle_alias,
            "fallback": o.result.fallback.value if o.result.fallback else None,
            "provisional": o.result.provisional,
        }
        for o in outcomes
        if isinstance(o.result, Estimate) and o.changed and o.row.id not in held_ids
    ]
    data["unpriced"] = [
        {
            "id": str(o.row.id),
            "hostwinds_instance_id": o.row.hostwinds_instance_id,
            "reason": o.result.reason.value,
            "detail": o.result.detail,
        }
        for o in outcomes
        if isinstance(o.result, Unpriced)
    ]
    return json.dumps(data, indent=2)


def report_text(data: dict[str, Any]) -> list[str]:
    lines = [
        f"fleet monthly total ${data['fleet_monthly_total']} over {data['rows_in_scope']} rows in scope"
        + (f" ({data['rows_without_value']} without a value)" if data["rows_without_value"] else "")
        + (
            f"; {data['provisional']} provisional (price-list estimates their own prices will refine)"
            if data.get("provisional")
            else ""
        )
    ]
    for section in ("by_status", "by_plan", "by_cycle", "by_source", "by_region"):
        rows = [
            [key, f"${e['total']}", str(e["rows"]), e.get("name") or ""] for key, e in data[section].items()
        ]
        lines += ["", section.replace("_", " ") + ":"]
        lines += ["  " + line for line in table(["", "total", "rows", ""], rows)]
    if data["unpriced"]:
        lines += ["", f"unpriced ({len(data['unpriced'])}; value kept):"]
        rows = [
            [
                u["hostwinds_instance_id"] or u["row_id"],
                u["kept_value"] or "-",
                u["reason"],
                u["detail"] or "",
            ]
            for u in data["unpriced"]
        ]
        lines += ["  " + line for line in table(["row", "kept", "reason", "detail"], rows)]
    if data["held"]:
        lines += ["", f"held ({len(data['held'])}):"]
        rows = [
            [h["hostwinds_instance_id"] or h["row_id"], h["old"] or "-", h["proposed"], h["ratio"]]
            for h in data["held"]
        ]
        lines += ["  " + line for line in table(["row", "old", "proposed", "ratio"], rows)]
    if data["drift"]:
        lines += ["", f"drift against monthly_cost ({len(data['drift'])}, largest first):"]
        rows = [
            [
                d["hostwinds_instance_id"] or d["row_id"],
                d["approximate_cost"],
                d["monthly_cost"],
                d["difference"],
                f"{d['percent']}%" if d["percent"] is not None else "-",
            ]
            for d in data["drift"]
        ]
        lines += [
            "  " + line for line in table(["row", "approximate", "monthly_cost", "difference", "%"], rows)
        ]
    if data["upgrade_available"]:
        names = ", ".join(u["hostwinds_instance_id"] or u["row_id"] for u in data["upgrade_available"])
        lines += ["", f"upgrade available at Hostwinds: {names}"]
    age = data["oldest_observation_age_seconds"]
    lines += [
        "",
        f"oldest price observation: {data['oldest_observation'] or 'none'}"
        + (
            " (dated in the future: the clock ran ahead; the next run asks it again)"
            if data["oldest_observation_in_future"]
            else f" ({age // 3600} h old)"
            if age is not None
            else ""
        ),
    ]
    last = data["last_run"]
    if last is not None:
        warnings = last["warnings"]
        lines.append(
            f"last whole-fleet run {last['run_id']} ({last['trigger']}) finished {last['finished']}: "
            + (f"{len(warnings)} warning(s)" if warnings else "no warnings")
        )
        lines += [f"  warning: {w}" for w in warnings]
    return lines
