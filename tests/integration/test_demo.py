"""`cost-sync demo`: the whole job on an embedded PostgreSQL and the sandbox, then a clean exit."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest

from cost_sync.cli.demo import DEMO_ROWS, DEMO_TENANTS, run_demo

pytestmark = pytest.mark.db

#: What each demo row must show (the demo fleet's header lists the arithmetic).
EXPECTED = {
    "1234568": ("$9.99", "price_list"),
    "582595e5-c2c2-44fa-afd0-4b10d4643731": ("$17.99", "cycle_prices"),
    "1234573": ("$39.99", "hourly ceiling"),
    "1234575": ("$42.00", "override"),
    "1234576": ("$4.99", "unknown_cycle"),
    "1234577": ("cycle_not_offered",),
    "7654321": ("$12.00", "not_found"),
    "1234579": ("$4.24", "out of scope"),
}


async def test_demo_prices_the_sample_fleet_and_cleans_up(tmp_path: Path) -> None:
    """The demo prints every row with its source, a steady second run, writes its HTML report, and
    leaves nothing running."""
    lines: list[str] = []
    page = tmp_path / "demo.html"
    assert await run_demo(keep=False, out=lines.append, html=page) == 0
    assert f"written to {page}: open it in a browser." in lines[-1]
    html = page.read_text(encoding="utf-8")
    assert html.count('<figure class="chart"') == 4
    assert all(name in html for name in DEMO_TENANTS)
    text = "\n".join(lines)
    # The attribution printed last names VPS again: the pricing table is what precedes it.
    text, _, attribution = text.partition("Tenant attribution after the sync")
    workdir = Path(re.search(r"embedded PostgreSQL in (\S+),", text)[1])  # type: ignore[index]

    rows = {
        line.split()[0]: line
        for line in text.splitlines()
        if line and line.split()[0] in {r[0] for r in DEMO_ROWS}
    }
    assert set(rows) == {r[0] for r in DEMO_ROWS}
    for instance, shown in EXPECTED.items():
        for token in shown:
            assert token in rows[instance], (instance, token)
    assert "$0.00" not in rows["1234577"]
    assert "Second run on the same prices: 0 rows written" in text
    assert "11 per-service prices from the cache, 0 asked again" in text

    # Delta's only VPS is unpriced (kept $12.00) with one IP at $4.99: 16.99, flagged.
    delta = next(line for line in attribution.splitlines() if "Delta Leads" in line)
    assert "$16.99" in delta
    assert "1 unpriced VPS" in delta
    assert all(name in attribution for name in DEMO_TENANTS)
    assert "no SMTP IP" in attribution
    assert "(balanced)" in attribution

    assert not workdir.exists()
    leftovers = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and str(workdir) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


async def test_demo_json_prints_both_reports_as_one_object() -> None:
    """`demo --json` prints one JSON object: both runs' reports, the second writing nothing."""
    lines: list[str] = []
    assert await run_demo(keep=False, as_json=True, out=lines.append) == 0
    assert len(lines) == 1
    answer = json.loads(lines[0])
    assert answer["outcome"] == "succeeded"
    first, second = answer["runs"]
    assert first["updated"] == 10
    assert second["updated"] == 0
    assert {row["hostwinds_instance_id"] for row in first["unpriced"]} == {"1234576", "1234577", "7654321"}


async def test_demo_keep_serves_until_ctrl_c_then_cleans_up() -> None:
    """`cost-sync demo --keep` keeps its database reachable until SIGINT, then exits 0 and deletes it."""
    demo = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("cost-sync")),
        "demo",
        "--keep",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert demo.stdout is not None
    seen: list[str] = []
    try:
        while not any("COST_SYNC_DATABASE_URL=" in line for line in seen):
            line = await asyncio.wait_for(demo.stdout.readline(), timeout=60)
            assert line, "the demo ended before printing how to connect"
            seen.append(line.decode())
        dsn = re.search(r"COST_SYNC_DATABASE_URL='([^']+)'", "".join(seen))[1]  # type: ignore[index]
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT count(*) FROM cost_sync_runs WHERE outcome = 'succeeded'") == 2
        await conn.close()
        demo.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(demo.communicate(), timeout=30)
    finally:
        if demo.returncode is None:
            demo.kill()
    assert demo.returncode == 0
    workdir = Path(re.search(r"embedded PostgreSQL in (\S+),", "".join(seen))[1])  # type: ignore[index]
    assert not workdir.exists()
    assert "deleted" in rest.decode()
