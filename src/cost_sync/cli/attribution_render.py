"""Text, JSON and CSV views of a tenant attribution; pure formatting, amounts as two-decimal strings."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any, Literal

from cost_sync.cli.render import money, table
from cost_sync.domain.attribution import Line, Report, VpsAllocation
from cost_sync.domain.redact import SafeCsvWriter

By = Literal["tenant", "vps"]


def amount(value: Decimal | None) -> str | None:
    """``"12.50"``; None stays None (unknown, never zero)."""
    return None if value is None else f"{value.quantize(Decimal('0.01')):f}"


def _amount(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


def balanced(report: Report) -> bool:
    """Whether the tenants' totals plus unallocated equal the fleet total summed from the inputs."""
    a = report.allocation
    return a.allocated + a.unallocated_vps_cost + a.unallocated_ip_cost == a.fleet_monthly_total


def check_line(report: Report) -> str:
    """``check: allocated $X + unallocated $Y = fleet total $Z (balanced)``."""
    a = report.allocation
    unallocated = a.unallocated_vps_cost + a.unallocated_ip_cost
    verdict = "balanced" if balanced(report) else "NOT BALANCED: report this as a defect"
    sign = "=" if balanced(report) else "!="
    return (
        f"check: allocated {money(a.allocated)} + unallocated {money(unallocated)} "
        f"{sign} fleet total {money(a.fleet_monthly_total)} ({verdict})"
    )


def _vps_name(allocation: VpsAllocation) -> str:
    return allocation.vps.hostwinds_instance_id or allocation.vps.id


def _unallocated_by_vps(report: Report) -> list[VpsAllocation]:
    return [a for a in report.allocation.vps if a.has_unallocated]


def _line_json(line: Line, report: Report) -> dict[str, Any]:
    return {
        "tenant_id": line.tenant_id,
        "tenant_name": report.tenant_names.get(line.tenant_id) if line.tenant_id else None,
        "vps_cost": amount(line.vps_cost),
        "ip_cost": _amount(line.ip_cost),
        "total": _amount(line.total),
        "ip_count": line.ip_count,
    }


def as_dict(report: Report, by: By = "tenant") -> dict[str, Any]:
    """The attribution as JSON-ready data; ``by="vps"`` adds each VPS's lines under ``vps``."""
    a = report.allocation
    data: dict[str, Any] = {
        "tenants": [
            {
                "tenant_id": t.tenant_id,
                "tenant_name": report.tenant_names.get(t.tenant_id),
                "vps_cost": _amount(t.vps_cost),
                "ip_cost": _amount(t.ip_cost),
                "total": _amount(t.total),
                "vps_count": t.vps_count,
                "ip_count": t.ip_count,
                "unpriced_vps": t.unpriced_vps,
            }
            for t in a.by_tenant()
        ],
        "unallocated": {
            "vps_cost": _amount(a.unallocated_vps_cost),
            "ip_cost": _amount(a.unallocated_ip_cost),
            "total": _amount(a.unallocated_vps_cost + a.unallocated_ip_cost),
            "by_vps": [
                {
                    "vps_instance_id": v.vps.id,
                    "hostwinds_instance_id": v.vps.hostwinds_instance_id,
                    "status": v.vps.status,
                    "vps_cost": amount(v.unallocated.vps_cost),
                    "ip_cost": _amount(v.unallocated.ip_cost),
                    "ip_count": v.ip_count,
                    "idle_ips": v.unallocated.ip_count,
                    "unpriced": v.vps.unpriced,
                }
                for v in _unallocated_by_vps(report)
            ],
        },
        "fleet_monthly_total": _amount(a.fleet_monthly_total),
        "allocated": _amount(a.allocated),
        "check": {"balanced": balanced(report), "line": check_line(report)},
        "unpriced": [
            {
                "vps_instance_id": v.id,
                "hostwinds_instance_id": v.hostwinds_instance_id,
                "approximate_cost": amount(v.approximate_cost),
                "why": v.why,
            }
            for v in a.unpriced
        ],
        "ip_cost_known": a.has_ip_cost,
        "ips_without_cost": a.ips_without_cost,
        "statuses": list(report.statuses),
        "generated_at": report.generated_at.isoformat(),
    }
    if by == "vps":
        data["vps"] = [
            {
                "vps_instance_id": v.vps.id,
                "hostwinds_instance_id": v.vps.hostwinds_instance_id,
                "status": v.vps.status,
                "approximate_cost": amount(v.vps.approximate_cost),
                "ip_cost": _amount(v.ip_cost),
                "ip_count": v.ip_count,
                "unpriced": v.vps.unpriced,
                "tenants": [_line_json(line, report) for line in v.tenants],
                "unallocated": _line_json(v.unallocated, report),
            }
            for v in a.vps
        ]
    return data


def as_json(report: Report, by: By = "tenant") -> str:
    """:func:`as_dict` as indented JSON."""
    return json.dumps(as_dict(report, by), indent=2)


def as_csv(report: Report, by: By = "tenant") -> str:
    """One row per tenant (``by="vps"``: per VPS and tenant) plus unallocated rows; the ``total``
    column sums to the fleet total."""
    out = io.StringIO()
    # Tenant names are neutralised where a spreadsheet would run them; numbers stay numbers.
    writer = SafeCsvWriter(out)
    a = report.allocation
    if by == "tenant":
        writer.writerow(
            [
                "bucket",
                "tenant_id",
                "tenant_name",
                "vps_count",
                "ip_count",
                "vps_cost",
                "ip_cost",
                "total",
                "unpriced_vps",
            ]
        )
        for t in a.by_tenant():
            name = report.tenant_names.get(t.tenant_id) or ""
            writer.writerow(
                [
                    "tenant",
                    t.tenant_id,
                    name,
                    t.vps_count,
                    t.ip_count,
                    _amount(t.vps_cost),
                    _amount(t.ip_cost),
                    _amount(t.total),
                    t.unpriced_vps,
                ]
            )
        rest = _unallocated_by_vps(report)
        writer.writerow(
            [
                "unallocated",
                "",
                "",
                len(rest),
                sum(v.unallocated.ip_count for v in rest),
                _amount(a.unallocated_vps_cost),
                _amount(a.unallocated_ip_cost),
                _amount(a.unallocated_vps_cost + a.unallocated_ip_cost),
                sum(1 for v in rest if v.vps.unpriced),
            ]
        )
        return out.getvalue()
    writer.writerow(
        [
            "vps_instance_id",
            "hostwinds_instance_id",
            "status",
            "unpriced",
            "bucket",
            "tenant_id",
            "tenant_name",
            "ip_count",
            "vps_cost",
            "ip_cost",
            "total",
        ]
    )
    for v in a.vps:
        for line in v.lines:
            if line.tenant_id is None and not v.has_unallocated:
                continue
            writer.writerow(
                [
                    v.vps.id,
                    v.vps.hostwinds_instance_id or "",
                    v.vps.status,
                    str(v.vps.unpriced).lower(),
                    "tenant" if line.tenant_id else "unallocated",
                    line.tenant_id or "",
                    (report.tenant_names.get(line.tenant_id) or "") if line.tenant_id else "",
                    line.ip_count,
                    amount(line.vps_cost) or "",
                    _amount(line.ip_cost),
                    _amount(line.total),
                ]
            )
    return out.getvalue()


def text(report: Report, by: By = "tenant") -> list[str]:
    """Tables for people: per tenant (or per VPS), unallocated by VPS, unpriced rows, the check line."""
    a = report.allocation
    lines: list[str] = []
    if by == "tenant":
        rows = [
            [
                t.tenant_id,
                report.tenant_names.get(t.tenant_id) or "-",
                str(t.vps_count),
                str(t.ip_count),
                money(t.vps_cost),
                money(t.ip_cost),
                money(t.total),
                f"{t.unpriced_vps} unpriced VPS" if t.unpriced_vps else "",
            ]
            for t in sorted(
                a.by_tenant(), key=lambda t: (report.tenant_names.get(t.tenant_id) or "", t.tenant_id)
            )
        ]
        lines += table(["tenant", "name", "VPS", "IPs", "vps cost", "ip cost", "total", ""], rows)
    else:
        rows = []
        for v in sorted(a.vps, key=_vps_name):
            for line in v.tenants:
                rows.append(
                    [
                        _vps_name(v),
                        v.vps.status,
                        money(v.vps.approximate_cost),
                        report.tenant_names.get(line.tenant_id or "") or line.tenant_id or "",
                        str(line.ip_count),
                        money(line.vps_cost),
                        money(line.ip_cost),
                        money(line.total),
                        "unpriced" if v.vps.unpriced else "",
                    ]
                )
        headers = ["vps", "status", "vps total", "tenant", "IPs", "vps cost", "ip cost", "total", ""]
        lines += table(headers, rows)
    rest = _unallocated_by_vps(report)
    lines += ["", f"unallocated (idle capacity) {money(a.unallocated_vps_cost + a.unallocated_ip_cost)}:"]
    rest_rows = [
        [
            _vps_name(v),
            v.vps.status,
            str(v.ip_count),
            str(v.unallocated.ip_count),
            money(v.unallocated.vps_cost),
            money(v.unallocated.ip_cost),
            "no SMTP IP" if not v.ip_count else ("no tenant" if not v.tenants else ""),
        ]
        for v in sorted(rest, key=_vps_name)
    ]
    lines += [
        "  " + row
        for row in table(["vps", "status", "IPs", "idle IPs", "vps cost", "ip cost", ""], rest_rows)
    ]
    if a.unpriced:
        lines += ["", "unpriced VPS (counted with their kept value; not a current cost-sync price):"]
        lines += [
            "  " + row
            for row in table(
                ["vps", "kept value", "why"],
                sorted(
                    [v.hostwinds_instance_id or v.id, money(v.approximate_cost), v.why or ""]
                    for v in a.unpriced
                ),
            )
        ]
    if a.has_ip_cost and a.ips_without_cost:
        lines += [
            "",
            f"{a.ips_without_cost} SMTP IP(s) have no approximate_cost: not counted (unknown, not zero)",
        ]
    lines += [
        "",
        f"fleet monthly total {money(a.fleet_monthly_total)} (statuses: {', '.join(report.statuses)})",
    ]
    lines.append(check_line(report))
    return lines
