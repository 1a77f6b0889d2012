"""``report --html``: one self-contained HTML page, charts drawn by matplotlib as inline SVG.

Guarantees: pure (no I/O, no clock): the page is a function of :func:`cost_sync.cli.report_data.html_data`'s
object. Nothing on it loads from the network (no script, stylesheet, font or image reference: the
charts are inline SVG, the styles inline CSS, fonts the reader's own). Every text that came from
the database or Hostwinds is escaped (in the HTML and in the charts, where mathtext is off). Every
amount shown is the string ``report --json`` or ``attribution --json`` gives; the elements that
show one carry ``data-source`` (``report``/``attribution``) and ``data-path`` (a JSON list of keys)
naming where. Charts never use colour alone: hatches, markers and direct labels say the same.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cost_sync.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_DAYS", "REPORT_EXTRA_MISSING", "render_page", "require_matplotlib"]

#: --since's default: this many days before today.
DEFAULT_DAYS = 90
REPORT_EXTRA_MISSING = (
    "report --html draws its charts with matplotlib, which is not installed: pip install 'cost-sync[report]'"
)

#: Okabe-Ito: told apart by most colour-blind readers; hatches tell them apart without colour.
_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999933"]
_HATCHES = ["//", "\\\\", "..", "xx", "--", "||", "oo", "++", "**", "OO"]
_IDLE_COLOUR = "#BBBBBB"
_IDLE_HATCH = "////"
#: Charts are drawn this wide (inches): A4's width less 15 mm margins, scaled to fit by CSS anyway.
_WIDTH = 7.0


def require_matplotlib() -> None:
    """ConfigError (exit 2) naming the extra to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(REPORT_EXTRA_MISSING) from None


# -- HTML helpers -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Text escaped for HTML content and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _fig(source: str, path: Sequence[str | int], shown: object) -> str:
    """A figure as ``report --json`` (source ``report``) or ``attribution --json`` gives it, tagged."""
    text = "unknown" if shown is None else str(shown)
    return (
        f'<span class="fig" data-source="{source}" data-path="{_e(json.dumps(list(path)))}">{_e(text)}</span>'
    )


def _usd(source: str, path: Sequence[str | int], value: str | None) -> str:
    return ("$" if value is not None else "") + _fig(source, path, value)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = ()) -> str:
    """A table; cells are HTML already (escape text with :func:`_e` first)."""
    th = "".join(
        f'<th scope="col"{" class=num" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _anchor(row_id: str) -> str:
    return "explain-" + re.sub(r"[^0-9A-Za-z-]", "", row_id)


# -- charts -----------------------------------------------------------------------------------------


def _figure(height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(_WIDTH, height), layout="constrained")


def _svg(fig: Figure, name: str, title: str) -> str:
    """The figure as an inline <svg> scaled to the page's width, its ids unique to ``name``."""
    import matplotlib

    out = io.StringIO()
    # hashsalt: the ids of clip paths and hatch patterns differ between the page's charts.
    # fonttype none: text stays text (the reader's sans-serif font, searchable, nothing to load).
    with matplotlib.rc_context({"svg.hashsalt": f"cost-sync-{name}", "svg.fonttype": "none"}):
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    svg = out.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(
        r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
        lambda m: (
            f'<svg {m[1]}role="img" aria-label="{_e(title)}" '
            'preserveAspectRatio="xMidYMid meet" style="width:100%;height:auto"'
        ),
        svg,
        count=1,
    )
    return f'<figure class="chart" data-chart="{_e(name)}">{svg}<figcaption>{_e(title)}</figcaption></figure>'


def _rc() -> AbstractContextManager[None]:
    """matplotlib settings of every chart, for the time it is drawn."""
    import matplotlib

    return matplotlib.rc_context(_RC)


_RC: Any = {
    # A name such as "$$$ Mail" is text, never mathtext.
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 8,
    "hatch.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _dates(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=8)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _f(value: str | Decimal) -> float:  # float-ok: chart coordinates only, never a shown amount
    return float(value)  # float-ok


def _fleet_chart(points: Sequence[dict[str, Any]]) -> str:

    # matplotlib draws dates (its stubs say numbers only).
    days: list[Any] = [date.fromisoformat(p["day"]) for p in points]
    totals = [_f(p["total"]) for p in points]
    with _rc():
        fig = _figure(2.8)
        ax = fig.add_subplot()
        # Each point is a day's closing total; the step holds it until the next day's.
        ax.step([*days, days[-1] + timedelta(days=1)], [*totals, totals[-1]], where="post", color="#0072B2")
        changed = [(d, t) for d, t, p in zip(days, totals, points, strict=True) if p["changes"]]
        if changed:
            ax.plot(
                [d for d, _ in changed],
                [t for _, t in changed],
                linestyle="none",
                marker="o",
                markersize=5,
                markerfacecolor="white",
                markeredgecolor="#000000",
                label="a day a run changed it",
            )
            ax.legend(loc="upper left", frameon=False)
        ax.annotate(
            f"${points[-1]['total']}",
            (days[-1], totals[-1]),
            xytext=(4, 6),
            textcoords="offset points",
            fontweight="bold",
        )
        ax.set_ylabel("USD a month")
        ax.set_ylim(bottom=0, top=max(totals) * 1.15 or 1)
        ax.grid(axis="y", linewidth=0.3)
        _dates(ax)
        return _svg(fig, "fleet", "The fleet's monthly total, one point a day")


Style = tuple[str, str]

#: Charts draw this many tenants by name at most; the rest are one "other tenants" series (the
#: tables list every tenant).
CHART_TENANTS = 12
_OTHER = "other"
_OTHER_STYLE: Style = ("#777777", "..")


def _styles(keys: Sequence[str]) -> dict[str, Style]:
    """(colour, hatch) per tenant key, the same in every chart; the unallocated share grey."""
    styles: dict[str, Style] = {"unallocated": (_IDLE_COLOUR, _IDLE_HATCH), _OTHER: _OTHER_STYLE}
    tenants = [k for k in keys if k != "unallocated"]
    for n, key in enumerate(tenants):
        styles[key] = (_COLOURS[n % len(_COLOURS)], _HATCHES[n % len(_HATCHES)])
    return styles


def _fold(series: dict[str, Any]) -> list[dict[str, Any]]:
    """The series to draw: the first CHART_TENANTS - 1 tenants, the rest summed as one, unallocated."""
    tenants = [s for s in series["series"] if s["key"] != "unallocated"]
    idle = [s for s in series["series"] if s["key"] == "unallocated"]
    if len(tenants) <= CHART_TENANTS:
        return tenants + idle
    rest = tenants[CHART_TENANTS - 1 :]
    totals = [
        str(sum((Decimal(s["totals"][n]) for s in rest), Decimal("0.00"))) for n in range(len(series["days"]))
    ]
    other = {"key": _OTHER, "name": f"{len(rest)} other tenants", "totals": totals}
    return [*tenants[: CHART_TENANTS - 1], other, *idle]


def _tenant_time_chart(series: dict[str, Any], styles: dict[str, Style]) -> str | None:
    if not series["days"]:
        return None
    drawn = _fold(series)
    days: list[Any] = [date.fromisoformat(d) for d in series["days"]]
    x = [*days, days[-1] + timedelta(days=1)]
    with _rc():
        fig = _figure(3.4)
        ax = fig.add_subplot()
        ys = [[*(_f(t) for t in s["totals"]), _f(s["totals"][-1])] for s in drawn]
        areas = ax.stackplot(x, ys, step="post", labels=[_short(s["name"]) for s in drawn])
        for area, s in zip(areas, drawn, strict=True):
            colour, hatch = styles.get(s["key"], (_IDLE_COLOUR, ""))
            area.set_facecolor(colour)
            area.set_hatch(hatch)
            area.set_edgecolor("#333333")
            area.set_linewidth(0.4)
        ax.set_ylabel("USD a month")
        ax.grid(axis="y", linewidth=0.3)
        # At least a week wide: one day's snapshot is a band, not a sliver of hours.
        ax.set_xlim(x[0], max(x[-1], x[0] + timedelta(days=7)))
        _dates(ax)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3, frameon=False)
        return _svg(fig, "tenants-over-time", "Cost per tenant over time (stacked; hatched by tenant)")


def _tenant_now_chart(attribution: dict[str, Any], styles: dict[str, Style]) -> str:
    # Largest first; past CHART_TENANTS, the rest as one bar.
    tenants = sorted(attribution["tenants"], key=lambda t: (-Decimal(t["total"]), t["tenant_id"]))
    bars_of: list[tuple[str, str, str]] = [
        (t["tenant_id"], t["tenant_name"] or t["tenant_id"], t["total"]) for t in tenants
    ]
    if len(bars_of) > CHART_TENANTS:
        rest = bars_of[CHART_TENANTS - 1 :]
        other = str(sum((Decimal(total) for _, _, total in rest), Decimal("0.00")))
        bars_of = [*bars_of[: CHART_TENANTS - 1], (_OTHER, f"{len(rest)} other tenants", other)]
    bars_of.append(("unallocated", "unallocated (idle)", attribution["unallocated"]["total"]))
    keys = [k for k, _, _ in bars_of]
    names = [n for _, n, _ in bars_of]
    totals = [t for _, _, t in bars_of]
    with _rc():
        fig = _figure(0.6 + 0.28 * len(names))
        ax = fig.add_subplot()
        y = list(range(len(names)))
        bars = ax.barh(y, [_f(t) for t in totals], edgecolor="#333333", linewidth=0.4)
        for bar, key in zip(bars, keys, strict=True):
            colour, hatch = styles.get(key, (_IDLE_COLOUR, ""))
            bar.set_facecolor(colour)
            bar.set_hatch(hatch)
        ax.bar_label(bars, labels=[f"${t}" for t in totals], padding=3)
        ax.set_yticks(y, [_short(n) for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("USD a month")
        ax.set_xlim(right=max([_f(t) for t in totals] + [1.0]) * 1.2)
        return _svg(fig, "tenants-now", "Cost per tenant now, the unallocated (idle) share last")


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _group_bars(section: str, groups: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(label, total, rows) per group in key order; past CHART_TENANTS groups, the largest and the
    rest as one bar (the tables list every group)."""
    bars = [
        (_short(_plan_label(k, e) if section == "by_plan" else k, 24), e["total"], int(e["rows"]))
        for k, e in groups.items()
    ]
    if len(bars) <= CHART_TENANTS:
        return bars
    bars.sort(key=lambda b: -Decimal(b[1]))
    rest = bars[CHART_TENANTS - 1 :]
    other = str(sum((Decimal(b[1]) for b in rest), Decimal("0.00")))
    return [*bars[: CHART_TENANTS - 1], (f"{len(rest)} others", other, sum(b[2] for b in rest))]


def _fleet_by_chart(report: dict[str, Any]) -> str:
    sections = [
        ("by_plan", "plan"),
        ("by_cycle", "cycle"),
        ("by_source", "price source"),
        ("by_region", "region"),
    ]
    drawn = {s: _group_bars(s, report[s]) for s, _ in sections}
    with _rc():
        longest = max(len(bars) for bars in drawn.values())
        fig = _figure(1.2 + 0.5 * max(2, longest))
        axes = fig.subplots(2, 2)
        for ax, (section, title) in zip(axes.flat, sections, strict=True):
            entries = drawn[section]
            y = list(range(len(entries)))
            bars = ax.barh(
                y, [_f(total) for _, total, _ in entries], color="#56B4E9", edgecolor="#333333", linewidth=0.4
            )
            ax.bar_label(bars, labels=[f"${total} · {rows} rows" for _, total, rows in entries], padding=2)
            ax.set_yticks(y, [label for label, _, _ in entries])
            ax.invert_yaxis()
            ax.set_title(f"by {title}", loc="left", fontweight="bold")
            top = max([_f(total) for _, total, _ in entries] + [1.0])
            ax.set_xlim(0, top * 1.9)
            ax.tick_params(axis="x", labelsize=7)
        return _svg(fig, "fleet-by", "The fleet by plan, billing cycle, price source and region")


def _plan_label(key: str, entry: dict[str, Any]) -> str:
    return f"{key} {entry['name']}" if entry.get("name") else key


# -- sections ---------------------------------------------------------------------------------------


def _head(data: dict[str, Any]) -> str:
    r = data["report"]
    attribution = data["attribution"]
    facts = [
        f"<li>Fleet monthly total <strong>{_usd('report', ['fleet_monthly_total'], r['fleet_monthly_total'])}"
        f"</strong> over {_fig('report', ['rows_in_scope'], r['rows_in_scope'])} rows in scope "
        f"(statuses {_e(', '.join(data['statuses']))})</li>",
        f"<li>Rows without a value (unknown, never counted as zero): "
        f"{_fig('report', ['rows_without_value'], r['rows_without_value'])}</li>",
        f"<li>Provisional values (price-list estimates a run will refine): "
        f"{_fig('report', ['provisional'], r['provisional'])}</li>",
        f"<li>For a person: held changes {len(r['held'])}, unpriced rows {len(r['unpriced'])}, "
        f"rows that differ from Finance's monthly_cost {len(r['drift'])}</li>",
    ]
    if attribution is not None:
        facts.append(
            f"<li>Tenant attribution (VPS and SMTP IP costs): {_e(attribution['check']['line'])}</li>"
        )
    return (
        "<header><h1>cost-sync report</h1>"
        f"<p class=meta>Generated {_fig('report', ['generated_at'], r['generated_at'])} from the database "
        f"alone; charts from {_e(data['since'])}. Amounts are USD a month.</p>"
        f"<ul class=facts>{''.join(facts)}</ul>"
        '<nav><a href="#fleet">Fleet total over time</a> · <a href="#tenants">Cost per tenant</a> · '
        '<a href="#breakdown">Fleet by plan, cycle, source, region</a> · '
        '<a href="#attention">What needs a person</a> · <a href="#changes">Largest changes</a></nav>'
        "</header>"
    )


def _fleet_section(data: dict[str, Any]) -> str:
    points = data["fleet_daily"]
    runs = data["runs"]
    rows = [
        [
            _e(run["at"][:19].replace("T", " ")),
            f"<code>{_e(run['run_id'])}</code>",
            _e(run["trigger"]),
            _e(run["rows_changed"]),
            _e(("+" if not run["difference"].startswith("-") else "") + run["difference"]),
        ]
        for run in runs
    ]
    table = (
        _table(["when (UTC)", "run", "trigger", "rows changed", "change to the total"], rows, numeric=(3, 4))
        if runs
        else "<p>No run changed a row in scope in this period.</p>"
    )
    first, last = points[0], points[-1]
    return (
        '<section id="fleet"><h2>The fleet\'s monthly total over time</h2>'
        f"<p>{_e(first['day'])}: ${_e(first['total'])}; today: "
        f"{_usd('report', ['fleet_monthly_total'], last['total'])}. "
        "Walked back from today's total through the history of the rows in scope now; "
        "circles mark the days a run changed it.</p>"
        f"{_fleet_chart(points)}<h3>The runs that changed it</h3>{table}</section>"
    )


def _tenant_section(data: dict[str, Any]) -> str:
    attribution = data["attribution"]
    if attribution is None:
        return (
            '<section id="tenants"><h2>Cost per tenant</h2>'
            "<p class=warn>Tenant attribution could not be read: "
            f"{_e(data['attribution_error'])}</p></section>"
        )
    rows = [
        [
            _e(t["tenant_name"] or "(no name)") + f"<br><small><code>{_e(t['tenant_id'])}</code></small>",
            _usd("attribution", ["tenants", i, "vps_cost"], t["vps_cost"]),
            _usd("attribution", ["tenants", i, "ip_cost"], t["ip_cost"]),
            "<strong>" + _usd("attribution", ["tenants", i, "total"], t["total"]) + "</strong>",
            _fig("attribution", ["tenants", i, "vps_count"], t["vps_count"]),
            _fig("attribution", ["tenants", i, "ip_count"], t["ip_count"]),
            _fig("attribution", ["tenants", i, "unpriced_vps"], t["unpriced_vps"]),
        ]
        for i, t in enumerate(attribution["tenants"])
    ]
    u = attribution["unallocated"]
    rows.append(
        [
            "<em>unallocated (idle capacity)</em>",
            _usd("attribution", ["unallocated", "vps_cost"], u["vps_cost"]),
            _usd("attribution", ["unallocated", "ip_cost"], u["ip_cost"]),
            "<strong>" + _usd("attribution", ["unallocated", "total"], u["total"]) + "</strong>",
            "",
            "",
            "",
        ]
    )
    rows.append(
        [
            "<strong>fleet total</strong>",
            "",
            "",
            "<strong>"
            + _usd("attribution", ["fleet_monthly_total"], attribution["fleet_monthly_total"])
            + "</strong>",
            "",
            "",
            "",
        ]
    )
    table = _table(
        ["tenant", "VPS share", "IP cost", "total", "VPS", "IPs", "unpriced VPS"],
        rows,
        numeric=(1, 2, 3, 4, 5, 6),
    )
    styles = _styles([s["key"] for s in data["tenants_over_time"]["series"]])
    over_time = _tenant_time_chart(data["tenants_over_time"], styles)
    days = len(data["tenants_over_time"]["days"])
    history = (
        f"<h3>Over time</h3><p>{days} day(s) with an attribution snapshot since {_e(data['since'])} "
        f"(one a day is kept for {_e(data['keep_days'])} days; today's is the picture now).</p>{over_time}"
        if over_time
        else ""
    )
    return (
        '<section id="tenants"><h2>Cost per tenant</h2>'
        f"<p>{_e(attribution['check']['line'])}</p>"
        f"{_tenant_now_chart(attribution, styles)}{table}{history}</section>"
    )


def _breakdown_section(report: dict[str, Any]) -> str:
    parts = []
    for section, title in (
        ("by_plan", "Plan"),
        ("by_cycle", "Billing cycle"),
        ("by_source", "Price source"),
        ("by_region", "Region"),
        ("by_status", "Status"),
    ):
        rows = [
            [
                _e(_plan_label(key, entry) if section == "by_plan" else key),
                _usd("report", [section, key, "total"], entry["total"]),
                _fig("report", [section, key, "rows"], entry["rows"]),
                _fig("report", [section, key, "rows_without_value"], entry["rows_without_value"]),
            ]
            for key, entry in report[section].items()
        ]
        parts.append(
            f'<div class="half"><h3>{_e(title)}</h3>'
            f"{_table([title.lower(), 'total', 'rows', 'without value'], rows, numeric=(1, 2, 3))}</div>"
        )
    return (
        '<section id="breakdown"><h2>The fleet by plan, cycle, price source and region</h2>'
        f"{_fleet_by_chart(report)}<div class=grid>{''.join(parts)}</div></section>"
    )


def _attention_section(data: dict[str, Any]) -> str:
    r = data["report"]
    parts = [
        _held_part(r),
        _unpriced_part(r),
        _provisional_part(r, data["provisional_rows"]),
        _drift_part(r),
        _observation_part(r),
        _notices_part(r),
    ]
    body = "".join(piece for part in parts for piece in part)
    return f'<section id="attention"><h2>What needs a person</h2>{body}</section>'


def _held_part(r: dict[str, Any]) -> list[str]:
    """Held changes, each with the command that approves it."""
    out: list[str] = []
    held = r["held"]
    out.append(f"<h3>Held changes ({len(held)})</h3>")
    if held:
        rows = [
            [
                _e(h["hostwinds_instance_id"] or h["row_id"]),
                _usd("report", ["held", i, "old"], h["old"]),
                _usd("report", ["held", i, "proposed"], h["proposed"]),
                _fig("report", ["held", i, "ratio"], h["ratio"]),
                _e(h["reason"]),
                _e(h["since"][:19].replace("T", " ")),
            ]
            for i, h in enumerate(held)
        ]
        out.append(
            _table(["row", "old", "proposed", "ratio", "reason", "since (UTC)"], rows, numeric=(1, 2, 3))
        )
        commands = [f"cost-sync approve --instance {_quote(h['row_id'])}" for h in held]
        commands.append("cost-sync approve --all --dry-run   # re-check them all first")
        out.append(
            "<p>Each is re-checked against current prices when approved. To approve:</p>"
            f"<pre class=cmd>{_e(chr(10).join(commands))}</pre>"
        )
    else:
        out.append("<p>None.</p>")
    return out


def _unpriced_part(r: dict[str, Any]) -> list[str]:
    """Unpriced rows: how many per reason, then each with its kept value."""
    out: list[str] = []
    unpriced = r["unpriced"]
    out.append(f"<h3>Unpriced rows ({len(unpriced)}; their values are kept)</h3>")
    if unpriced:
        reasons: dict[str, int] = {}
        for u in unpriced:
            reasons[u["reason"]] = reasons.get(u["reason"], 0) + 1
        out.append(
            "<ul>"
            + "".join(f"<li><code>{_e(k)}</code>: {n} row(s)</li>" for k, n in sorted(reasons.items()))
            + "</ul>"
        )
        rows = [
            [
                _e(u["hostwinds_instance_id"] or u["row_id"]),
                f"<code>{_e(u['reason'])}</code>",
                _e(u["detail"] or ""),
                _usd("report", ["unpriced", i, "kept_value"], u["kept_value"]),
            ]
            for i, u in enumerate(unpriced)
        ]
        out.append(_table(["row", "reason", "detail", "kept value"], rows, numeric=(3,)))
    else:
        out.append("<p>None.</p>")
    return out


def _provisional_part(r: dict[str, Any], provisional: list[str]) -> list[str]:
    """Rows priced from the price list while their own prices are still to be asked."""
    out: list[str] = []
    out.append(f"<h3>Provisional values ({_fig('report', ['provisional'], r['provisional'])})</h3>")
    out.append(
        "<p>Price-list estimates given while the instance's own cycle prices are still to be asked; "
        "the next run refines them"
        + (": " + ", ".join(f"<code>{_e(p)}</code>" for p in provisional) if provisional else "")
        + ".</p>"
    )
    return out


def _drift_part(r: dict[str, Any]) -> list[str]:
    """Rows whose value differs from Finance's monthly_cost, largest first."""
    out: list[str] = []
    drift = r["drift"]
    out.append(f"<h3>Drift against Finance's monthly_cost ({len(drift)}, largest first)</h3>")
    if drift:
        rows = [
            [
                _e(d["hostwinds_instance_id"] or d["row_id"]),
                _usd("report", ["drift", i, "approximate_cost"], d["approximate_cost"]),
                _usd("report", ["drift", i, "monthly_cost"], d["monthly_cost"]),
                _usd("report", ["drift", i, "difference"], d["difference"]),
                _fig("report", ["drift", i, "percent"], d["percent"])
                + ("%" if d["percent"] is not None else ""),
            ]
            for i, d in enumerate(drift)
        ]
        out.append(
            _table(["row", "approximate_cost", "monthly_cost", "difference", "%"], rows, numeric=(1, 2, 3, 4))
        )
    else:
        out.append("<p>None: every row with both values agrees.</p>")
    return out


def _observation_part(r: dict[str, Any]) -> list[str]:
    """The oldest cached price observation and its age."""
    out: list[str] = []
    out.append("<h3>Oldest price observation</h3>")
    age = r["oldest_observation_age_seconds"]
    if r["oldest_observation"] is None:
        out.append("<p>No cached price observation.</p>")
    else:
        note = (
            " (dated in the future: the clock ran ahead; the next run asks it again)"
            if r["oldest_observation_in_future"]
            else f", {age // 3600} h old ({_fig('report', ['oldest_observation_age_seconds'], age)} s)"
        )
        out.append(f"<p>{_fig('report', ['oldest_observation'], r['oldest_observation'])}{note}.</p>")
    return out


def _notices_part(r: dict[str, Any]) -> list[str]:
    """The last whole-fleet run's warnings, and instances with an upgrade available."""
    out: list[str] = []
    last = r["last_run"]
    if last is not None and last["warnings"]:
        out.append(f"<h3>Warnings of the last whole-fleet run <code>{_e(last['run_id'])}</code></h3>")
        out.append("<ul>" + "".join(f"<li>{_e(w)}</li>" for w in last["warnings"]) + "</ul>")
    if r["upgrade_available"]:
        names = ", ".join(
            f"<code>{_e(u['hostwinds_instance_id'] or u['row_id'])}</code>" for u in r["upgrade_available"]
        )
        out.append(f"<h3>Upgrade available at Hostwinds</h3><p>{names}</p>")
    return out


def _quote(text: str) -> str:
    """A shell word: row ids are UUIDs, but never trust that."""
    return text if re.fullmatch(r"[0-9A-Za-z_.:-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def _changes_section(data: dict[str, Any]) -> str:
    largest = data["largest_changes"]
    out = [f'<section id="changes"><h2>The largest changes since {_e(data["since"])}</h2>']
    if not largest:
        out.append("<p>No change in the period.</p></section>")
        return "".join(out)
    rows = [
        [
            _e(c["at"][:19].replace("T", " ")),
            f'<a href="#{_anchor(c["row_id"])}">{_e(c["hostwinds_instance_id"] or c["row_id"])}</a>',
            _e("$" + c["old"] if c["old"] is not None else "no value"),
            _e("$" + c["new"]),
            _e(("+" if not c["difference"].startswith("-") else "") + c["difference"]),
            f"<code>{_e(c['run_id'][:8])}</code>" + (" (approved)" if c["approved"] else ""),
        ]
        for c in largest
    ]
    out.append(
        _table(
            ["when (UTC)", "row (its explanation)", "old", "new", "change", "run"], rows, numeric=(2, 3, 4)
        )
    )
    out.append("<h3>Explanations (<code>cost-sync explain</code>)</h3>")
    names = {c["row_id"]: c["hostwinds_instance_id"] for c in largest}
    for row_id, lines in data["explanations"].items():
        title = f"{names.get(row_id) or row_id} (row {row_id})"
        out.append(
            f'<article class="explain" id="{_anchor(row_id)}"><h4>{_e(title)}</h4>'
            f"<pre>{_e(chr(10).join(lines))}</pre></article>"
        )
    out.append("</section>")
    return "".join(out)


_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0 auto;
  max-width: 60rem; padding: 1.5rem; color: #111; background: #fff; line-height: 1.4; font-size: 14px; }
h1 { margin: 0 0 .25rem; } h2 { border-bottom: 2px solid #111; padding-bottom: .2rem; margin-top: 2rem; }
.meta { color: #444; } nav { margin: .75rem 0; } a { color: #0645ad; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: 13px; }
th, td { border-bottom: 1px solid #999; padding: .2rem .4rem; text-align: left; vertical-align: top; }
th { border-bottom: 2px solid #111; } .num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
pre { background: #f4f4f4; border: 1px solid #999; padding: .5rem; overflow-x: auto; white-space: pre-wrap; }
figure.chart { margin: .5rem 0 1rem; } figure.chart svg { display: block; max-width: 100%; }
figcaption { font-size: 12px; color: #444; }
.grid { display: flex; flex-wrap: wrap; gap: 0 2rem; } .half { flex: 1 1 24rem; }
.warn { border-left: 4px solid #111; padding-left: .5rem; } .explain h4 { margin-bottom: 0; }
@page { size: A4; margin: 15mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; } nav { display: none; }
  a { color: inherit; text-decoration: none; }
  h2 { break-before: page; break-after: avoid; } header + section h2 { break-before: auto; }
  h3, h4 { break-after: avoid; } figure.chart, tr, .explain { break-inside: avoid; }
  thead { display: table-header-group; } pre { white-space: pre-wrap; }
}
"""


def render_page(data: dict[str, Any]) -> str:
    """The whole page from :func:`cost_sync.cli.report_data.html_data`'s object."""
    body = "".join(
        [
            _head(data),
            _fleet_section(data),
            _tenant_section(data),
            _breakdown_section(data["report"]),
            _attention_section(data),
            _changes_section(data),
        ]
    )
    generated = datetime.fromisoformat(data["report"]["generated_at"]).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Nothing loads from anywhere but this file, even if a future change forgot it.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>cost-sync report {_e(generated)}</title><style>{_CSS}</style></head>"
        f"<body>{body}<footer><p class=meta>Every amount here is what <code>cost-sync report --json</code> "
        "and <code>cost-sync attribution --json</code> gave when the page was written.</p></footer>"
        "</body></html>\n"
    )
