"""`cost-sync report --html`: the page's figures equal `report --json` and `attribution --json`,
tenant cost is kept one snapshot a day, hostile names are text, and what is missing is said."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cost_sync.cli import main as cli
from tests.integration.test_attribution import NAMES, T1, V_IDLE, V_SHARED, seed_platform

pytestmark = pytest.mark.db

#: What a tenant, a VPS and a plan may be called by whoever can write those tables.
HOSTILE_TENANT = '<img src=x onerror=alert(1)> $\\frac{1}{0}$ "quoted" & </td>'
HOSTILE_HOST = '"><script>alert("host")</script>'
HOSTILE_PRODUCT = "</title><script>alert('plan')</script><style>body{display:none}</style>"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> Any:
    """`cost-sync ARGV` against ``url`` in this thread; (exit code, stdout, stderr)."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", url)
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def seed_history(url: str, *, hostile: bool = False) -> None:
    """The attribution fleet plus a past: runs on earlier days, a held change, drift, kept tenant days."""
    await seed_platform(url)
    conn = await asyncpg.connect(url)
    try:
        # A coherent past instead of the platform seed's "all priced just now".
        await conn.execute("DELETE FROM cost_sync_history")
        now = datetime.now(UTC)
        # Two runs in the past changed the shared VPS; an approval changed the idle one.
        for days_ago, vps, old, new, trigger in (
            (20, V_SHARED, None, "8.00", "scheduled"),
            (6, V_SHARED, "8.00", "10.01", "scheduled"),
            (3, V_IDLE, "4.99", "9.99", "once"),
        ):
            run_id = uuid.uuid4()
            at = now - timedelta(days=days_ago)
            await conn.execute(
                "INSERT INTO cost_sync_runs (id, trigger, outcome, started, finished, updated)"
                " VALUES ($1, $2, 'succeeded', $3, $3, 1)",
                run_id,
                trigger,
                at,
            )
            await conn.execute(
                "INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, old_cost,"
                " new_cost, source, created, product_id, product_name)"
                " VALUES ($1, $2, 'x', $3::numeric, $4::numeric, 'price_list', $5, 101, $6)",
                run_id,
                vps,
                old,
                new,
                at,
                HOSTILE_PRODUCT if hostile else "Unmanaged Linux VPS 1",
            )
        # Finance's number differs for one row; one change waits for a person.
        await conn.execute(
            "UPDATE vps_instances SET monthly_cost = 9.00, region = 'dal' WHERE id = $1", V_IDLE
        )
        await conn.execute(
            "INSERT INTO cost_sync_held_changes (vps_instance_id, hostwinds_instance_id, old_cost,"
            " proposed_cost, ratio, reason, run_id, source)"
            " VALUES ($1, 'shared', 10.01, 30.03, 2.0, 'change over max_change_ratio', $2, 'price_list')",
            V_SHARED,
            uuid.uuid4(),
        )
        # Tenant cost kept for two earlier days.
        for days_ago, t1_total, idle_total in ((10, "5.00", "3.00"), (2, "7.00", "11.99")):
            day = (now - timedelta(days=days_ago)).date()
            for bucket, ref, total in (("tenant", T1, t1_total), ("unallocated", None, idle_total)):
                await conn.execute(
                    "INSERT INTO cost_sync_tenant_daily (day, snapshot_id, computed_at, bucket, tenant_ref,"
                    " tenant_name, vps_cost, total)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $7::numeric)",
                    day,
                    uuid.uuid4(),
                    now - timedelta(days=days_ago),
                    bucket,
                    ref,
                    NAMES[T1] if ref else None,
                    total,
                )
        if hostile:
            await conn.execute("UPDATE tenants SET name = $1 WHERE id = $2", HOSTILE_TENANT, T1)
            await conn.execute(
                "UPDATE vps_instances SET hostwinds_instance_id = $1 WHERE id = $2", HOSTILE_HOST, V_SHARED
            )
    finally:
        await conn.close()


class Page(HTMLParser):
    """The tags of a page, its text, and each tagged figure: (source, path, text)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.figures: list[tuple[str, list[Any], str]] = []
        self._open: list[tuple[str, list[Any], list[str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if "data-source" in found:
            self._open.append((found["data-source"] or "", json.loads(found["data-path"] or "[]"), []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open:
            source, path, parts = self._open.pop()
            self.figures.append((source, path, "".join(parts)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, _, parts in self._open:
            parts.append(data)


def lookup(data: Any, path: list[Any]) -> Any:
    for key in path:
        data = data[key]
    return data


#: Figures that are the clock, not the data: they differ between two commands run a moment apart.
CLOCKS = (["generated_at"], ["oldest_observation_age_seconds"])


def shown(value: Any) -> str:
    return "unknown" if value is None else str(value)


def assert_figures_match(figures: list[tuple[str, list[Any], str]], report: Any, attribution: Any) -> int:
    """Every tagged figure equals its JSON value; returns how many were compared."""
    sources = {"report": report, "attribution": attribution}
    compared = 0
    for source, path, text in figures:
        if path in CLOCKS:
            continue
        assert text == shown(lookup(sources[source], path)), (source, path)
        compared += 1
    return compared


async def write_page(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, path: Path
) -> tuple[str, Any, Any]:
    """Write the page; return it with `report --json` and `attribution --json` read right after."""
    code, out, err = await asyncio.to_thread(run, monkeypatch, capsys, url, "report", "--html", str(path))
    assert code == 0, err
    assert f"report written to {path}" in out
    code, out, _ = await asyncio.to_thread(run, monkeypatch, capsys, url, "report", "--json")
    assert code == 0
    report = json.loads(out)
    code, out, _ = await asyncio.to_thread(run, monkeypatch, capsys, url, "attribution", "--json")
    assert code == 0
    return path.read_text(encoding="utf-8"), report, json.loads(out)


async def test_every_figure_equals_report_and_attribution_json(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The page's figures are the JSON's; its sections, charts and explanations are all there."""
    await seed_history(db_url)
    text, report, attribution = await write_page(monkeypatch, capsys, db_url, tmp_path / "r.html")
    page = Page(text)
    assert assert_figures_match(page.figures, report, attribution) > 40
    paths = {(s, tuple(p)) for s, p, _ in page.figures}
    for must in (
        ("report", ("fleet_monthly_total",)),
        ("report", ("held", 0, "proposed")),
        ("report", ("drift", 0, "difference")),
        ("report", ("by_region", "dal", "total")),
        ("attribution", ("unallocated", "total")),
        ("attribution", ("tenants", 0, "total")),
        ("attribution", ("fleet_monthly_total",)),
    ):
        assert must in paths, must
    # Four charts, each an inline SVG; nothing refers outside the page.
    charts = [a["data-chart"] for tag, a in page.tags if tag == "figure" and "data-chart" in a]
    assert charts == ["fleet", "tenants-now", "tenants-over-time", "fleet-by"]
    assert sum(1 for tag, _ in page.tags if tag == "svg") == 4
    for tag, attrs in page.tags:
        assert tag not in {"script", "img", "link", "iframe", "object"}, tag
        for name in ("href", "src", "xlink:href"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
    assert "@page { size: A4" in text
    # The held change's approve command, and the largest change's explanation in the page.
    assert f"cost-sync approve --instance {V_SHARED}" in text
    assert f'href="#explain-{V_SHARED}"' in text
    assert f'id="explain-{V_SHARED}"' in text
    assert "history (newest first):" in "".join(page.text)


async def test_history_walks_back_from_todays_total(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """One point a day from --since; the last is today's total; each run's change is a step."""
    from cost_sync.cli import report_data
    from cost_sync.settings import Settings

    await seed_history(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        now = datetime.now(UTC)
        since = (now - timedelta(days=30)).date()
        data = await report_data.html_data(pool, Settings(), since=since, now=now)
    finally:
        await pool.close()
    points = data["fleet_daily"]
    assert len(points) == 31
    assert points[0]["day"] == since.isoformat()
    assert points[-1]["total"] == data["report"]["fleet_monthly_total"] == "39.00"
    # 39.00 today; before day -3's run 34.00 (+5.00), before day -6's 31.99 (+2.01), before day
    # -20's 23.99 (the shared VPS had no value: +8.00, one more row without a value).
    assert [r["difference"] for r in data["runs"]] == ["8.00", "2.01", "5.00"]
    assert points[0]["total"] == "23.99"
    assert points[0]["rows_without_value"] == points[-1]["rows_without_value"] + 1
    assert [points[n]["total"] for n in (-4, -5, -7, -8)] == ["39.00", "34.00", "34.00", "31.99"]
    assert [p["changes"] for p in points].count(1) == 3
    # Tenant days: two kept days and today (the picture now).
    assert len(data["tenants_over_time"]["days"]) == 3
    keys = [s["key"] for s in data["tenants_over_time"]["series"]]
    assert keys[-1] == "unallocated"


async def test_hostile_names_are_text(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A tenant, host or plan named like markup shows as its text: no element, no script, no mathtext."""
    await seed_history(db_url, hostile=True)
    text, report, attribution = await write_page(monkeypatch, capsys, db_url, tmp_path / "r.html")
    page = Page(text)
    assert {tag for tag, _ in page.tags}.isdisjoint({"script", "img", "iframe", "object", "link"})
    # The page's own style and one in each chart's SVG, nothing from the plan's name.
    tags = [tag for tag, _ in page.tags]
    assert tags.count("style") == 1 + tags.count("svg")
    assert sum(1 for tag, _ in page.tags if tag == "title") == 1
    plain = "".join(page.text)
    assert HOSTILE_TENANT in plain
    assert HOSTILE_HOST in plain
    assert HOSTILE_PRODUCT in plain
    assert assert_figures_match(page.figures, report, attribution) > 40


async def test_one_tenant_snapshot_a_day_kept_keep_days(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each snapshot replaces its day's rows (the view's sums); days past keep_days are forgotten."""
    await seed_platform(db_url)
    conn = await asyncpg.connect(db_url)
    try:
        old_day = datetime.now(UTC).date() - timedelta(days=31)
        await conn.execute(
            "INSERT INTO cost_sync_tenant_daily (day, snapshot_id, computed_at, bucket, total)"
            " VALUES ($1, $2, now() - interval '31 days', 'unallocated', 1.00)",
            old_day,
            uuid.uuid4(),
        )
        monkeypatch.setenv("COST_SYNC_ATTRIBUTION_KEEP_DAYS", "30")
        for _ in range(2):
            code, _, err = await asyncio.to_thread(run, monkeypatch, capsys, db_url, "attribution", "--write")
            assert code == 0, err
        days = await conn.fetch("SELECT DISTINCT day FROM cost_sync_tenant_daily")
        assert [r["day"] for r in days] == [datetime.now(UTC).date()]
        daily = await conn.fetch(
            "SELECT tenant_ref::text AS ref, total, vps_count FROM cost_sync_tenant_daily ORDER BY 1"
        )
        view = await conn.fetch(
            "SELECT tenant_ref::text AS ref, total, vps_count FROM cost_sync_tenant_monthly ORDER BY 1"
        )
        assert [tuple(r) for r in daily] == [tuple(r) for r in view]
        assert len(daily) == 4  # three tenants and the unallocated share
    finally:
        await conn.close()


async def test_without_matplotlib_it_says_which_extra(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No matplotlib: exit 2, one line naming the extra, no file written."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = await asyncio.to_thread(
        run, monkeypatch, capsys, db_url, "report", "--html", str(tmp_path / "r.html")
    )
    assert code == 2
    assert err.strip().splitlines() == [
        "cost-sync: error: report --html draws its charts with matplotlib, which is not installed: "
        "pip install 'cost-sync[report]'"
    ]
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--since", "2026-01-01"], "--since goes with --html"),
        (["report", "--html", "x.html", "--csv"], "--html writes a page; --csv prints a table"),
        (["report", "--html", "x.html", "--since", "yesterday"], "is not a date"),
        (["report", "--html", "x.html", "--since", "2999-01-01"], "is in the future"),
    ],
)
async def test_usage_errors(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    """--since without --html, --html with --csv, a bad or future date: exit 2 saying so."""

    def attempt() -> tuple[int, str]:
        try:
            code, _, err = run(monkeypatch, capsys, db_url, *argv)
        except SystemExit as exc:  # argparse's own refusals
            return int(str(exc.code)), capsys.readouterr().err
        return code, err

    code, err = await asyncio.to_thread(attempt)
    assert code == 2
    assert message in err
