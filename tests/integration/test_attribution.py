"""`cost-sync attribution` and the snapshot against real PostgreSQL and the platform's tenant tables."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import respx

from cost_sync.cli import main as cli
from cost_sync.settings import Settings
from cost_sync.store import attribution as attribution_store
from cost_sync.store.migrate import sql_dir
from tests.integration.conftest import API_KEY, URL, FakeHostwinds, instance

pytestmark = pytest.mark.db

D = Decimal
FIXTURES = sql_dir() / "fixtures"


def uid(n: int) -> str:
    """A readable fixed UUID: ids order as their numbers do, so tie-breaks can be computed by hand."""
    return f"00000000-0000-0000-0000-{n:012x}"


T1, T2, T3 = uid(0xA1), uid(0xA2), uid(0xA3)
V_SHARED, V_IDLE, V_BARE, V_GONE, V_UNPRICED, V_NULL = (uid(n) for n in range(1, 7))

#: (id, hostwinds_instance_id, status, approximate_cost, priced by cost-sync)
VPS: list[tuple[str, str, str, str | None, bool]] = [
    (V_SHARED, "shared", "active", "10.01", True),
    (V_IDLE, "idle", "active", "9.99", True),
    (V_BARE, "bare", "provisioning", "7.00", True),
    (V_GONE, "gone", "decommissioned", "50.00", True),
    (V_UNPRICED, "unpriced", "active", "12.00", False),
    (V_NULL, "null", "active", None, False),
]
#: (ip id, vps id, ip status, [(tenant, assignment status)])
IPS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (uid(0x11), V_SHARED, "active", [(T2, "active"), (T1, "active")]),
    (uid(0x12), V_SHARED, "active", [(T3, "warming")]),
    (uid(0x21), V_IDLE, "active", [(T1, "active"), (T3, "paused")]),
    (uid(0x22), V_IDLE, "idle", [(T2, "active")]),
    (uid(0x41), V_GONE, "active", [(T1, "active")]),
    (uid(0x51), V_UNPRICED, "active", [(T3, "active")]),
    (uid(0x61), V_NULL, "active", [(T2, "active")]),
]
NAMES = {T1: "Acme Mail", T2: "Beta Outreach", T3: "Cobalt Growth"}


async def seed_platform(url: str) -> None:
    """The documented platform tables with the hand-computed fleet above; history for priced rows."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute((FIXTURES / "tenants.sql").read_text())
        for vps_id, hw_id, status, cost, priced in VPS:
            await conn.execute(
                "INSERT INTO vps_instances (id, hostwinds_instance_id, status, approximate_cost)"
                " VALUES ($1, $2, $3, $4::numeric)",
                vps_id,
                hw_id,
                status,
                cost,
            )
            if priced:
                await conn.execute(
                    "INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, new_cost,"
                    " source) VALUES (gen_random_uuid(), $1, $2, $3::numeric, 'price_list')",
                    vps_id,
                    hw_id,
                    cost,
                )
        for tenant, name in NAMES.items():
            await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant, name)
            # Two domains per tenant: a tenant is one taker of an IP however many domains it has.
            for n in range(2):
                await conn.execute(
                    "INSERT INTO domains (tenant_id, domain) VALUES ($1, $2)", tenant, f"d{n}.{name}.example"
                )
        for ip_id, vps_id, status, assignments in IPS:
            await conn.execute(
                "INSERT INTO smtp_ip_addresses (id, vps_instance_id, ip_address, status)"
                " VALUES ($1, $2, '192.0.2.1', $3)",
                ip_id,
                vps_id,
                status,
            )
            for tenant, assignment_status in assignments:
                await conn.execute(
                    "INSERT INTO domain_ip_assignments (domain_id, smtp_ip_address_id, status)"
                    " SELECT id, $2, $3 FROM domains WHERE tenant_id = $1",
                    tenant,
                    ip_id,
                    assignment_status,
                )
    finally:
        await conn.close()


async def attribution(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *args: str
) -> tuple[int, str, str]:
    """Run `cost-sync attribution ARGS` against ``url``; (exit code, stdout, stderr)."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", url)
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["attribution", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def by_tenant(report: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """tenant -> (name, vps_cost, ip_cost, total, vps_count, ip_count, unpriced_vps)."""
    return {
        t["tenant_id"]: (
            t["tenant_name"],
            t["vps_cost"],
            t["ip_cost"],
            t["total"],
            t["vps_count"],
            t["ip_count"],
            t["unpriced_vps"],
        )
        for t in report["tenants"]
    }


async def test_hand_computed_fleet(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shared VPS, idle IP, VPS without IPs, a tenant on several VPS, decommissioned out, unpriced flagged."""
    await seed_platform(db_url)
    code, out, _ = await attribution(monkeypatch, capsys, db_url, "--json")
    assert code == 0
    report = json.loads(out)
    # shared 10.01 over two IPs: 5.01 (ip 0x11) + 5.00 (ip 0x12); 5.01 over T1, T2: 2.51 + 2.50.
    # idle 9.99: 5.00 to T1 (its paused T3 assignment does not count), 4.99 on the idle IP unallocated.
    # bare 7.00: no IP, unallocated. unpriced 12.00 (never priced by cost-sync): T3, flagged.
    # null (no value): T2 uses it, its share unknown, never zero. gone: decommissioned, out.
    assert by_tenant(report) == {
        T1: ("Acme Mail", "7.51", "0.00", "7.51", 2, 2, 0),
        T2: ("Beta Outreach", "2.50", "0.00", "2.50", 2, 2, 1),
        T3: ("Cobalt Growth", "17.00", "0.00", "17.00", 2, 2, 1),
    }
    unallocated = report["unallocated"]
    assert (unallocated["vps_cost"], unallocated["ip_cost"]) == ("11.99", "0.00")
    assert {v["hostwinds_instance_id"]: (v["vps_cost"], v["idle_ips"]) for v in unallocated["by_vps"]} == {
        "idle": ("4.99", 1),
        "bare": ("7.00", 0),
    }
    assert report["fleet_monthly_total"] == "39.00"
    assert report["check"]["balanced"] is True
    assert "allocated $27.01 + unallocated $11.99 = fleet total $39.00" in report["check"]["line"]
    assert {u["hostwinds_instance_id"]: (u["approximate_cost"], u["why"]) for u in report["unpriced"]} == {
        "unpriced": ("12.00", "never priced by cost-sync"),
        "null": (None, "no value"),
    }
    assert report["generated_at"].endswith("+00:00")

    code, out, _ = await attribution(monkeypatch, capsys, db_url, "--json", "--by", "vps")
    per_vps = {v["hostwinds_instance_id"]: v for v in json.loads(out)["vps"]}
    assert set(per_vps) == {"shared", "idle", "bare", "unpriced", "null"}
    for hw_id, v in per_vps.items():
        lines = [*v["tenants"], v["unallocated"]]
        if v["approximate_cost"] is None:
            assert all(line["vps_cost"] is None for line in lines), hw_id
        else:
            assert sum(D(line["vps_cost"]) for line in lines) == D(v["approximate_cost"]), hw_id


async def test_ip_cost_is_attributed_when_the_column_exists(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With smtp_ip_addresses.approximate_cost ($4.99 each), each IP's cost is attributed as ip_cost."""
    await seed_platform(db_url)
    conn = await asyncpg.connect(db_url)
    await conn.execute((FIXTURES / "smtp_ip_addresses_approximate_cost.sql").read_text())
    await conn.close()
    code, out, _ = await attribution(monkeypatch, capsys, db_url, "--json")
    assert code == 0
    report = json.loads(out)
    # ip 0x11 4.99 over T1, T2: 2.50 + 2.49; 0x12 to T3; 0x21 to T1; 0x22 idle; 0x51 to T3; 0x61 to T2.
    assert {t: (row[2], row[3]) for t, row in by_tenant(report).items()} == {
        T1: ("7.49", "15.00"),
        T2: ("7.48", "9.98"),
        T3: ("9.98", "26.98"),
    }
    assert report["unallocated"]["ip_cost"] == "4.99"
    assert report["fleet_monthly_total"] == "68.94"  # 39.00 + six IPs in scope x 4.99
    assert report["check"]["balanced"] is True


async def test_csv_rows_add_up_to_the_fleet_total(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per tenant and per VPS, the CSV's total column (unallocated rows included) sums to the fleet total."""
    await seed_platform(db_url)
    for by in ("tenant", "vps"):
        code, out, _ = await attribution(monkeypatch, capsys, db_url, "--csv", "--by", by)
        assert code == 0
        rows = list(csv.DictReader(io.StringIO(out)))
        assert sum(D(r["total"]) for r in rows) == D("39.00"), by
        assert {r["bucket"] for r in rows} == {"tenant", "unallocated"}


async def test_text_output_ends_with_the_check_line(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table for people names the tenants, the idle capacity, the unpriced VPS and the balance."""
    await seed_platform(db_url)
    code, out, _ = await attribution(monkeypatch, capsys, db_url)
    assert code == 0
    assert "Acme Mail" in out
    assert "no SMTP IP" in out
    assert "unpriced VPS" in out
    assert out.strip().splitlines()[-1] == (
        "check: allocated $27.01 + unallocated $11.99 = fleet total $39.00 (balanced)"
    )


async def test_snapshot_and_view_agree_with_the_command(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--write` replaces the snapshot; per VPS its rows add up to the cost; the view matches the JSON."""
    await seed_platform(db_url)
    code, _, _ = await attribution(monkeypatch, capsys, db_url, "--write")
    assert code == 0
    code, out, _ = await attribution(monkeypatch, capsys, db_url, "--write", "--json")
    assert code == 0
    report = json.loads(out)
    conn = await asyncpg.connect(db_url)
    try:
        # Replaced as a whole: the second write left one snapshot only.
        assert await conn.fetchval("SELECT count(DISTINCT snapshot_id) FROM cost_sync_tenant_costs") == 1
        sums = await conn.fetch(
            "SELECT v.hostwinds_instance_id, v.approximate_cost, sum(c.vps_cost) AS shares"
            " FROM cost_sync_tenant_costs c JOIN vps_instances v ON v.id = c.vps_instance_id"
            " GROUP BY 1, 2"
        )
        assert {r[0]: (r[1], r[2]) for r in sums} == {
            "shared": (D("10.01"), D("10.01")),
            "idle": (D("9.99"), D("9.99")),
            "bare": (D("7.00"), D("7.00")),
            "unpriced": (D("12.00"), D("12.00")),
            "null": (None, None),
        }
        view = await conn.fetch("SELECT * FROM cost_sync_tenant_monthly")
    finally:
        await conn.close()
    tenants = {
        str(r["tenant_ref"]): (
            r["tenant_name"],
            f"{r['vps_cost']:.2f}",
            f"{r['ip_cost']:.2f}",
            f"{r['total']:.2f}",
            r["vps_count"],
            r["ip_count"],
            r["unpriced_vps"],
        )
        for r in view
        if r["bucket"] == "tenant"
    }
    assert tenants == by_tenant(report)
    (rest,) = [r for r in view if r["bucket"] == "unallocated"]
    assert rest["tenant_ref"] is None
    assert f"{rest['vps_cost']:.2f}" == report["unallocated"]["vps_cost"]
    assert f"{sum(r['total'] for r in view):.2f}" == report["fleet_monthly_total"]


async def test_missing_table_or_column_exits_2_naming_it_and_writes_nothing(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without domain_ip_assignments or domains.tenant_id: exit 2 naming both, and nothing written."""
    await seed_platform(db_url)
    assert (await attribution(monkeypatch, capsys, db_url, "--write"))[0] == 0
    conn = await asyncpg.connect(db_url)
    try:
        before = [tuple(r) for r in await conn.fetch("SELECT * FROM cost_sync_tenant_costs ORDER BY 7, 5")]
        await conn.execute("ALTER TABLE domain_ip_assignments RENAME TO domain_ip_assignments_gone")
        await conn.execute("ALTER TABLE domains RENAME COLUMN tenant_id TO owner_id")
        code, out, err = await attribution(monkeypatch, capsys, db_url, "--write")
        assert code == 2
        assert out == ""
        assert "table domain_ip_assignments" in err
        assert "column domains.tenant_id" in err
        after = [tuple(r) for r in await conn.fetch("SELECT * FROM cost_sync_tenant_costs ORDER BY 7, 5")]
        assert after == before
    finally:
        await conn.close()


async def test_write_without_the_migration_names_the_snapshot_table(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading works without migration 0004; `--write` exits 2 naming cost_sync_tenant_costs."""
    await seed_platform(db_url)
    conn = await asyncpg.connect(db_url)
    try:
        # A database where 0004's objects are missing (rollback goes newest first, so this is the
        # rollback file alone, as a hand-dropped table would leave it).
        await conn.execute((sql_dir() / "rollback" / "0004_cost_sync_tenant_costs.sql").read_text())
    finally:
        await conn.close()
    assert (await attribution(monkeypatch, capsys, db_url))[0] == 0
    code, _, err = await attribution(monkeypatch, capsys, db_url, "--write")
    assert code == 2
    assert "table cost_sync_tenant_costs" in err
    assert "cost-sync migrate" in err


async def test_without_a_tenants_table_names_are_null(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """tenants is optional: without it the allocation is the same, with tenant_name null."""
    await seed_platform(db_url)
    conn = await asyncpg.connect(db_url)
    await conn.execute("DROP TABLE tenants")
    await conn.close()
    code, out, _ = await attribution(monkeypatch, capsys, db_url, "--json")
    assert code == 0
    tenants = by_tenant(json.loads(out))
    assert {t: row[0] for t, row in tenants.items()} == {T1: None, T2: None, T3: None}
    assert tenants[T1][3] == "7.51"


async def test_a_vps_the_last_run_could_not_price_is_flagged_with_its_kept_value(
    hostwinds: FakeHostwinds, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Priced once, then gone from Hostwinds: its last price still counts, flagged unpriced with why."""
    await seed_platform(db_url)
    conn = await asyncpg.connect(db_url)
    await conn.execute("UPDATE vps_instances SET hostwinds_instance_id = '1' WHERE id = $1", V_SHARED)
    await conn.close()
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        hostwinds.instances = [instance(1)]  # plan 101, monthly: 9.99
        assert await asyncio.to_thread(cli.main, ["--once"]) == 0
        _, out, _ = await attribution(monkeypatch, capsys, db_url, "--json")
        assert "shared" not in {u["hostwinds_instance_id"] for u in json.loads(out)["unpriced"]}
        assert "1" not in {u["hostwinds_instance_id"] for u in json.loads(out)["unpriced"]}
        hostwinds.instances = [instance(2)]  # service 1 is no longer listed
        # No row names service 2: the run commits, warns nothing_matched and exits 1.
        assert await asyncio.to_thread(cli.main, ["--once", "--accept-changes"]) == 1
    code, out, _ = await attribution(monkeypatch, capsys, db_url, "--json")
    assert code == 0
    report = json.loads(out)
    flagged = {u["hostwinds_instance_id"]: (u["approximate_cost"], u["why"]) for u in report["unpriced"]}
    gone = "the last run could not price it (not_found)"
    # Every row Hostwinds does not list now is flagged, whatever it was before; no value stays "no value".
    assert flagged == {
        "1": ("9.99", gone),
        "idle": ("9.99", gone),
        "bare": ("7.00", gone),
        "unpriced": ("12.00", gone),
        "null": (None, "no value"),
    }
    # Kept values still count: T1 uses "1" and idle, both flagged, and the totals still balance.
    assert report["check"]["balanced"] is True
    assert by_tenant(report)[T1][6] == 2
    _, text, _ = await attribution(monkeypatch, capsys, db_url)
    assert "the last run could not price it (not_found)" in text


async def test_enabled_sync_writes_the_snapshot_after_its_run(
    hostwinds: FakeHostwinds, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With [attribution] enabled, `--once` snapshots the new prices under its run id; a dry run does not."""
    await seed_platform(db_url)
    hostwinds.instances = [instance(1)]  # plan 101, monthly: 9.99
    conn = await asyncpg.connect(db_url)
    await conn.execute("UPDATE vps_instances SET hostwinds_instance_id = '1' WHERE id = $1", V_UNPRICED)
    await conn.close()
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        assert await asyncio.to_thread(cli.main, ["--once"]) == 0
        conn = await asyncpg.connect(db_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM cost_sync_tenant_costs") == 0
            monkeypatch.setenv("COST_SYNC_ATTRIBUTION_ENABLED", "true")
            assert await asyncio.to_thread(cli.main, ["--once", "--dry-run"]) == 0
            assert await conn.fetchval("SELECT count(*) FROM cost_sync_tenant_costs") == 0
            # Within [guard] max_change_ratio of 9.99, so the sync applies it rather than holding it.
            await conn.execute("UPDATE vps_instances SET approximate_cost = 9.00 WHERE id = $1", V_UNPRICED)
            assert await asyncio.to_thread(cli.main, ["--once"]) == 0
            run_ids = await conn.fetch("SELECT DISTINCT run_id FROM cost_sync_tenant_costs")
            last_run = await conn.fetchval("SELECT id FROM cost_sync_runs ORDER BY started DESC LIMIT 1")
            assert [r[0] for r in run_ids] == [last_run]
            # The sync set 9.99 again; the snapshot has it for T3, and the row is now priced.
            row = await conn.fetchrow(
                "SELECT vps_cost, unpriced FROM cost_sync_tenant_costs WHERE vps_instance_id = $1", V_UNPRICED
            )
            assert (row["vps_cost"], row["unpriced"]) == (D("9.99"), False)
        finally:
            await conn.close()


async def test_enabled_sync_with_missing_tables_reports_it_after_committing(
    hostwinds: FakeHostwinds, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sync commits its prices; the snapshot's missing table makes `--once` exit 2 naming it."""
    hostwinds.instances = [instance(1)]
    conn = await asyncpg.connect(db_url)
    await conn.execute("INSERT INTO vps_instances (hostwinds_instance_id, status) VALUES ('1', 'active')")
    await conn.close()
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    monkeypatch.setenv("COST_SYNC_ATTRIBUTION_ENABLED", "true")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        assert await asyncio.to_thread(cli.main, ["--once"]) == 2
    captured = capsys.readouterr()
    assert "table smtp_ip_addresses" in captured.err
    assert "succeeded" in captured.out  # the committed run's report comes first
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT approximate_cost FROM vps_instances") == D("9.99")
        assert await conn.fetchval("SELECT outcome FROM cost_sync_runs") == "succeeded"
    finally:
        await conn.close()


def docs_sql(marker: str) -> str:
    """The SQL block that follows ``<!-- marker -->`` in docs/attribution.md."""
    text = (Path(__file__).parents[2] / "docs" / "attribution.md").read_text()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    return after.split("```sql", 1)[1].split("```", 1)[0]


async def test_docs_example_drafted_view_against_cost_sync(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/attribution.md's example: the drafted view charges each tenant $32.02; cost-sync splits $20.01."""
    acme, beta, cobalt = uid(0xA1), uid(0xA2), uid(0xA3)
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute((FIXTURES / "tenants.sql").read_text())
        for n, cost in ((1, "10.01"), (2, "6.00"), (3, "4.00")):
            await conn.execute(
                "INSERT INTO vps_instances (id, hostwinds_instance_id, status, approximate_cost)"
                " VALUES ($1, $2, 'active', $3::numeric)",
                uid(n),
                "ABC"[n - 1],
                cost,
            )
        for tenant, name in ((acme, "Acme"), (beta, "Beta"), (cobalt, "Cobalt")):
            await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant, name)
            await conn.execute(
                "INSERT INTO domains (id, tenant_id, domain) VALUES ($1, $1, $2)", tenant, f"{name}.example"
            )
        for ip, vps_n, status, tenants in (
            (uid(0x11), 1, "active", [acme, beta]),
            (uid(0x12), 1, "active", [cobalt]),
            (uid(0x13), 2, "active", [acme]),
            (uid(0x14), 2, "idle", []),
        ):
            await conn.execute(
                "INSERT INTO smtp_ip_addresses (id, vps_instance_id, ip_address, status)"
                " VALUES ($1, $2, '192.0.2.1', $3)",
                ip,
                uid(vps_n),
                status,
            )
            for tenant in tenants:
                await conn.execute(
                    "INSERT INTO domain_ip_assignments (domain_id, smtp_ip_address_id) VALUES ($1, $2)",
                    tenant,
                    ip,
                )
        drafted = await conn.fetch(docs_sql("drafted-bi-view"))
        assert [(r[0], r[1]) for r in drafted] == [(n, D("32.02")) for n in ("Acme", "Beta", "Cobalt")]

        assert (await attribution(monkeypatch, capsys, db_url, "--write"))[0] == 0
        dashboard = await conn.fetch(docs_sql("dashboard-query"))
    finally:
        await conn.close()
    assert [(r["tenant"], r["total"]) for r in dashboard] == [
        ("Acme", D("5.51")),
        ("Cobalt", D("5.00")),
        ("Beta", D("2.50")),
        ("unallocated (idle capacity)", D("7.00")),
    ]
    assert sum(r["total"] for r in dashboard) == D("20.01")


async def test_an_older_picture_never_replaces_a_newer_snapshot(db_url: str) -> None:
    """Two writers that read, then write in the other order: the snapshot read last stays."""
    await seed_platform(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        settings = Settings()
        older = await attribution_store.compute(pool, settings, snapshot=True)
        await pool.execute("UPDATE vps_instances SET approximate_cost = 20.00 WHERE id = $1", V_BARE)
        newer = await attribution_store.compute(pool, settings, snapshot=True)
        assert await attribution_store.store_snapshot(pool, newer) > 0
        assert await attribution_store.store_snapshot(pool, older) == 0
        bare = await pool.fetchval(
            "SELECT vps_cost FROM cost_sync_tenant_costs WHERE vps_instance_id = $1", V_BARE
        )
        assert bare == D("20.00")
    finally:
        await pool.close()
