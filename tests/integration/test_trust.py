"""explain, held, approve, report and quote end to end: real PostgreSQL, Hostwinds through respx, the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import respx

from cost_sync.cli import main as cli
from tests.integration.conftest import API_KEY, PLANS, URL, FakeHostwinds, instance, seed, values

pytestmark = pytest.mark.db

UUID_7 = "00000000-0000-0000-0000-000000000007"


@pytest.fixture
def env(hostwinds: FakeHostwinds, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI pointed at the test database and the fake Hostwinds (through respx)."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", API_KEY)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", URL)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND", "0")
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        yield


async def cost_sync(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in a thread (it runs its own event loop); its exit code and stdout."""
    code = await asyncio.to_thread(cli.main, list(argv))
    return code, capsys.readouterr().out


def scaled_plans(factor: str) -> list[dict[str, Any]]:
    """The fake price list with plan 101's prices multiplied by ``factor``."""
    plans = []
    for plan in PLANS:
        plan = dict(plan)
        if plan["id"] == 101:
            for cycle in ("monthly", "quarterly", "semiannually", "annually", "biennially", "triennially"):
                plan[cycle] = str(Decimal(plan[cycle]) * Decimal(factor))
        plans.append(plan)
    return plans


async def connect(db_url: str) -> asyncpg.Connection:
    """A connection to the test database."""
    return await asyncpg.connect(db_url)


async def test_tenfold_glitch_is_held_listed_and_approved_one_then_all(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """x10 prices are held (values kept, exit 0), listed, approved one at a time and then all at once."""
    hostwinds.instances = [instance(n) for n in (1, 2, 3)]
    conn = await connect(db_url)
    await seed(conn, [("1", "active", None), ("2", "active", None), ("3", "active", None)])
    assert (await cost_sync(capsys, "--once"))[0] == 0
    hostwinds.plans = scaled_plans("10")
    code, out = await cost_sync(capsys, "--once", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["held"]["count"] == 3
    assert {r["proposed"] for r in report["held"]["rows"]} == {"99.90"}
    assert report["updated"] == 0
    assert set((await values(conn)).values()) == {Decimal("9.99")}
    assert await conn.fetchval("SELECT held FROM cost_sync_runs ORDER BY started DESC LIMIT 1") == 3

    code, out = await cost_sync(capsys, "held", "--json")
    listed = json.loads(out)
    assert listed["count"] == 3
    assert {(r["old"], r["proposed"], r["ratio"]) for r in listed["rows"]} == {("9.99", "99.90", "9.0000")}
    assert all("max_change_ratio" in r["reason"] for r in listed["rows"])
    code, text = await cost_sync(capsys, "held")
    assert code == 0
    assert text.count("$99.90") == 3
    assert "9.0000" in text

    code, out = await cost_sync(capsys, "approve", "--instance", "1", "--dry-run")
    assert code == 0
    assert "would approve 1" in out
    assert (await values(conn))["1"] == Decimal("9.99")
    code, out = await cost_sync(capsys, "approve", "--instance", "1")
    assert code == 0, out
    assert (await values(conn))["1"] == Decimal("99.90")
    assert (await values(conn))["2"] == Decimal("9.99")
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 2

    code, out = await cost_sync(capsys, "approve", "--all", "--json")
    assert code == 0
    assert sorted(json.loads(out)["approved"]) == ["2", "3"]
    assert set((await values(conn)).values()) == {Decimal("99.90")}
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 0
    code, out = await cost_sync(capsys, "approve", "--all", "--dry-run")
    assert (code, out.strip()) == (0, "no changes are held: nothing to approve")
    approved = await conn.fetch(
        "SELECT h.run_id, h.proposed_by, h.source, h.cycle_price, r.trigger FROM cost_sync_history h "
        "JOIN cost_sync_runs r ON r.id = h.run_id WHERE h.approved"
    )
    assert len(approved) == 3
    assert {(a["source"], a["cycle_price"], a["trigger"]) for a in approved} == {
        ("price_list", Decimal("99.90"), "approve")
    }
    assert all(a["proposed_by"] is not None and a["proposed_by"] != a["run_id"] for a in approved)
    # Nothing left to hold: the next run agrees with what was approved.
    code, out = await cost_sync(capsys, "--once", "--json")
    assert json.loads(out)["held"]["count"] == 0
    assert json.loads(out)["updated"] == 0
    await conn.close()


async def test_stale_approval_is_refused_with_the_reason(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held at x10, then Hostwinds returns to normal: approving is refused (exit 1), the value stays."""
    hostwinds.instances = [instance(1)]
    conn = await connect(db_url)
    await seed(conn, [("1", "active", "9.99")])
    await cost_sync(capsys, "--once")
    hostwinds.plans = scaled_plans("10")
    await cost_sync(capsys, "--once")
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 1
    hostwinds.plans = list(PLANS)
    code, out = await cost_sync(capsys, "approve", "--instance", "1")
    assert code == 1
    assert "refused 1: a run would compute 9.99 now, not the held 99.90" in out
    assert (await values(conn))["1"] == Decimal("9.99")
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_history WHERE approved") == 0
    code, out = await cost_sync(capsys, "approve", "--instance", "424242")
    assert code == 2
    await conn.close()


async def test_accept_changes_applies_and_named_resync_applies_by_default(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """--once --accept-changes writes the x10 price; resync --instance applies without the flag."""
    hostwinds.instances = [instance(1), instance(2)]
    conn = await connect(db_url)
    await seed(conn, [("1", "active", "9.99"), ("2", "active", "9.99")])
    hostwinds.plans = scaled_plans("10")
    code, out = await cost_sync(capsys, "--once", "--accept-changes", "--instance", "1", "--json")
    assert code == 0
    assert json.loads(out)["updated"] == 1
    code, out = await cost_sync(capsys, "resync", "--instance", "2", "--json")
    assert code == 0
    assert json.loads(out)["updated"] == 1
    assert set((await values(conn)).values()) == {Decimal("99.90")}
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 0
    await conn.close()


async def test_shrunken_instance_list_applies_nothing_and_exits_1(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostwinds listing 2 of 10 instances: exit 1, the reason on stderr, no value or history changes."""
    hostwinds.instances = [instance(n) for n in range(1, 11)]
    conn = await connect(db_url)
    await seed(conn, [(str(n), "active", None) for n in range(1, 11)])
    assert (await cost_sync(capsys, "--once"))[0] == 0
    before = await values(conn)
    history = await conn.fetchval("SELECT count(*) FROM cost_sync_history")
    hostwinds.instances = [instance(1), instance(2, cycle="Annually")]
    code = await asyncio.to_thread(cli.main, ["--once"])
    err = capsys.readouterr().err
    assert code == 1
    assert "8 of 10 rows" in err
    assert "last good run" in err
    assert await values(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_history") == history
    failed = await conn.fetchrow("SELECT outcome, error FROM cost_sync_runs ORDER BY started DESC LIMIT 1")
    assert failed["outcome"] == "failed"
    assert "8 of 10" in failed["error"]
    await conn.close()


FLEET_ROWS: list[tuple[str | None, str, str | None]] = [
    ("1", "active", None),  # price_list, monthly
    ("2", "active", None),  # price_list, quarterly 29.97 / 3
    ("3", "provisioning", None),  # cycle_prices, annually 100.00 / 12 = 8.333...
    ("4", "active", None),  # override
    ("5", "active", None),  # hourly ceiling
    (UUID_7, "active", None),  # matched by server_uuid, semiannually
    ("8", "active", "4.44"),  # unknown cycle: unpriced, value kept
    ("999", "active", "6.66"),  # not at Hostwinds: unpriced, value kept
    ("1000", "decommissioned", "7.77"),  # out of scope
]


def mixed_fleet(hostwinds: FakeHostwinds) -> None:
    """Every price source and a few rounding cases."""
    hostwinds.instances = [
        instance(1),
        instance(2, cycle="Quarterly"),
        instance(3, cycle="Annually", upgrade_available=1),
        instance(4),
        instance(5, hourly=1),
        instance(7, cycle="Semi-Annually"),
        instance(8, cycle="Bi-Annually"),
    ]
    hostwinds.cycle_prices = {3: {"annually": "100.00"}}


async def seed_mixed(db_url: str) -> asyncpg.Connection:
    """The mixed fleet's rows, with Finance's monthly_cost on some of them."""
    conn = await connect(db_url)
    await seed(conn, FLEET_ROWS)
    await conn.execute(
        "UPDATE vps_instances SET region = CASE WHEN hostwinds_instance_id IN ('1', '2') THEN 'us-east' "
        "ELSE 'eu-west' END"
    )
    await conn.execute("UPDATE vps_instances SET monthly_cost = 9.99 WHERE hostwinds_instance_id = '1'")
    await conn.execute("UPDATE vps_instances SET monthly_cost = 12.00 WHERE hostwinds_instance_id = '2'")
    await conn.execute("UPDATE vps_instances SET monthly_cost = 5.00 WHERE hostwinds_instance_id = '3'")
    return conn


async def test_explain_reproduces_every_stored_value(
    hostwinds: FakeHostwinds,
    db_url: str,
    env: None,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """For every source the last change's recorded price and months recompute the stored value."""
    mixed_fleet(hostwinds)
    conn = await seed_mixed(db_url)
    config = tmp_path / "cost-sync.toml"
    config.write_text('[overrides]\n"4" = "42.00"\n', encoding="utf-8")
    path = str(config)
    assert (await cost_sync(capsys, "--config", path, "--once"))[0] == 0
    stored = await values(conn)
    sources = set()
    for key in ("1", "2", "3", "4", "5", UUID_7, "7"):
        code, out = await cost_sync(capsys, "--config", path, "explain", key, "--json")
        assert code == 0, out
        data = json.loads(out)
        last = data["last_change"]
        assert last["reproduces"] is True
        assert last["new"] == data["approximate_cost"] == str(stored[data["hostwinds_instance_id"]])
        assert last["rounded"] == data["approximate_cost"]
        assert set(last) >= {"run_id", "at", "old", "new", "source", "cycle", "cycle_price", "months"}
        assert data["history"][0] == last
        # The cache (observations and the cached price list) computes the same value now.
        assert (data["now"]["monthly"], data["now"]["differs"]) == (data["approximate_cost"], False), key
        sources.add((last["source"], last["hourly_ceiling"]))
    assert sources == {
        ("price_list", False),
        ("cycle_prices", False),
        ("override", False),
        ("price_list", True),
    }

    code, out = await cost_sync(capsys, "--config", path, "explain", "3", "--json")
    data = json.loads(out)
    assert data["last_change"]["quotient"] == "8.33333333333333333333..."
    assert data["now"]["differs"] is False
    code, out = await cost_sync(capsys, "--config", path, "explain", "7", "--json")
    assert json.loads(out)["match"]["by"] == "server_uuid"
    # "Quarterly" names a cycle by itself: no alias was used, and explain says none.
    code, out = await cost_sync(capsys, "--config", path, "explain", "2", "--json")
    assert json.loads(out)["match"]["cycle_alias"] is None
    # The cached observation changes: explain says what a run would compute now, and history grows.
    await conn.execute(
        'UPDATE cost_sync_price_observations SET prices = \'{"annually": "120.00"}\' WHERE serviceid = 3'
    )
    code, out = await cost_sync(capsys, "--config", path, "explain", "3", "--json")
    now = json.loads(out)["now"]
    assert (now["monthly"], now["differs"]) == ("10.00", True)
    hostwinds.cycle_prices = {3: {"annually": "120.00"}}
    await cost_sync(capsys, "--config", path, "--once", "--full")
    code, out = await cost_sync(capsys, "--config", path, "explain", "3", "--json")
    data = json.loads(out)
    assert [h["new"] for h in data["history"]] == ["10.00", "8.33"]
    assert data["last_change"]["old"] == "8.33"
    assert data["last_change"]["reproduces"] is True
    code, text = await cost_sync(capsys, "--config", path, "explain", "3")
    assert "reproduces the stored value" in text
    assert "120.00 / 12" in text

    # A x10 price list is held by the guard, but it is cached: explain says what a run computes now.
    hostwinds.plans = scaled_plans("10")
    assert (await cost_sync(capsys, "--config", path, "--once"))[0] == 0
    code, out = await cost_sync(capsys, "--config", path, "explain", "1", "--json")
    data = json.loads(out)
    assert data["approximate_cost"] == "9.99"
    assert [h["proposed"] for h in data["held"]] == ["99.90"]
    now = data["now"]
    assert (now["monthly"], now["source"], now["differs"]) == ("99.90", "price_list", True)
    assert now["price_list_observed"] is not None
    code, text = await cost_sync(capsys, "--config", path, "explain", "1")
    assert (
        "now: a run would compute 99.90 from the cached prices (price_list, fallback cycle_prices_empty)"
        in text
    )
    await conn.close()


async def test_report_totals_equal_the_sums_in_sql(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fleet and group totals equal SQL sums over the rows in scope, held and unpriced values included."""
    mixed_fleet(hostwinds)
    conn = await seed_mixed(db_url)
    await cost_sync(capsys, "--once")
    hostwinds.cycle_prices = {3: {"annually": "1200.00"}}  # x10: held
    await cost_sync(capsys, "--once", "--full")
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_held_changes") == 1
    code, out = await cost_sync(capsys, "report", "--json")
    assert code == 0
    report = json.loads(out)
    scope = "status IN ('active', 'provisioning', 'scheduled_decommission')"
    total = await conn.fetchval(f"SELECT sum(approximate_cost) FROM vps_instances WHERE {scope}")
    assert report["fleet_monthly_total"] == f"{total:.2f}"
    assert Decimal(report["fleet_monthly_total"]) > 0
    for status, amount in await conn.fetch(
        f"SELECT status, sum(approximate_cost) FROM vps_instances WHERE {scope} GROUP BY status"
    ):
        assert report["by_status"][status]["total"] == f"{amount:.2f}"
    for region, amount in await conn.fetch(
        f"SELECT region, sum(approximate_cost) FROM vps_instances WHERE {scope} GROUP BY region"
    ):
        assert report["by_region"][region]["total"] == f"{amount:.2f}"
    for key in ("by_status", "by_plan", "by_cycle", "by_source", "by_region"):
        assert sum(Decimal(v["total"]) for v in report[key].values()) == total, key
    assert {u["hostwinds_instance_id"]: (u["reason"], u["kept_value"]) for u in report["unpriced"]} == {
        "8": ("unknown_cycle", "4.44"),
        "999": ("not_found", "6.66"),
    }
    assert [h["hostwinds_instance_id"] for h in report["held"]] == ["3"]
    assert report["held"][0]["proposed"] == "100.00"
    assert report["held"][0]["old"] == "8.33"
    # Row 1 agrees with Finance; 3 and 2 drift, the larger difference first.
    assert [(d["hostwinds_instance_id"], d["difference"], d["percent"]) for d in report["drift"]] == [
        ("3", "3.33", "66.60"),
        ("2", "-2.01", "-16.75"),
    ]
    assert [u["hostwinds_instance_id"] for u in report["upgrade_available"]] == ["3"]
    assert report["oldest_observation_age_seconds"] >= 0
    # The last whole-fleet run and what it flagged, as the ledger keeps it.
    last = await conn.fetchrow("SELECT id, warnings FROM cost_sync_runs ORDER BY started DESC LIMIT 1")
    assert report["last_run"]["run_id"] == str(last["id"])
    assert report["last_run"]["trigger"] == "once"
    assert report["last_run"]["warnings"] == last["warnings"]
    assert last["warnings"] == [
        "1 of 8 rows change to x10 or more or to x0.5 or less of their value (e.g. 8.33 -> 100.00); "
        "1 of them held for approval"
    ]
    assert set(report) >= {
        "fleet_monthly_total",
        "by_status",
        "by_plan",
        "by_cycle",
        "by_source",
        "by_region",
        "unpriced",
        "held",
        "drift",
        "generated_at",
    }
    code, out = await cost_sync(capsys, "report", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["section"] == "fleet_monthly_total"
    assert rows[0]["amount"] == f"{total:.2f}"
    amounts = [
        r["amount"] for r in rows if r["section"] not in {"oldest_observation", "warning"} and r["amount"]
    ]
    assert amounts
    assert all(re.fullmatch(r"-?\d+\.\d\d", a) for a in amounts)
    assert ["warning", str(last["id"])] == [rows[-1]["section"], rows[-1]["key"]]
    assert rows[-1]["detail"] == last["warnings"][0]
    code, text = await cost_sync(capsys, "report")
    assert f"${total:.2f}" in text
    assert f"last whole-fleet run {last['id']} (once)" in text
    assert "1 warning(s)\n  warning: 1 of 8 rows change to x10" in text
    await conn.close()


async def test_quote_agrees_with_the_run_after_the_upgrade(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quote plan 102 annually for instance 1; upgrade it at Hostwinds; the resync stores the quoted value."""
    hostwinds.instances = [instance(1)]
    conn = await connect(db_url)
    await seed(conn, [("1", "active", None)])
    await cost_sync(capsys, "--once")
    asked = dict(hostwinds.requests)
    code, out = await cost_sync(
        capsys, "quote", "--instance", "1", "--plan", "102", "--cycle", "Annually", "--json"
    )
    assert code == 0, out
    quote = json.loads(out)
    assert (quote["monthly"], quote["current"], quote["difference"]) == ("17.99", "9.99", "8.00")
    assert set(hostwinds.requests) <= {"get_instances", "get_price_list", "get_billingcycle_prices"}
    assert hostwinds.requests["get_billingcycle_prices"] == asked["get_billingcycle_prices"]
    code, text = await cost_sync(capsys, "quote", "--instance", "1", "--plan", "102", "--cycle", "annually")
    assert code == 0
    assert "$17.99 a month (215.89 / 12); now $9.99, difference 8.00" in text
    hostwinds.instances = [instance(1, product_id=102, cycle="Annually")]
    assert (await cost_sync(capsys, "resync", "--instance", "1"))[0] == 0
    assert (await values(conn))["1"] == Decimal(quote["monthly"])
    code, out = await cost_sync(capsys, "quote", "--instance", "1", "--plan", "101", "--cycle", "Biannually")
    assert code == 2
    await conn.close()


async def test_explain_names_the_cycle_alias_a_value_was_priced_through(
    hostwinds: FakeHostwinds,
    db_url: str,
    env: None,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A row priced through [hostwinds.cycle_aliases] shows the spelling and the cycle it was read as."""
    mixed_fleet(hostwinds)
    conn = await seed_mixed(db_url)
    config = tmp_path / "cost-sync.toml"
    config.write_text('[hostwinds.cycle_aliases]\n"Bi-Annually" = "semiannually"\n', encoding="utf-8")
    path = str(config)
    assert (await cost_sync(capsys, "--config", path, "--once", "--accept-changes"))[0] == 0
    code, out = await cost_sync(capsys, "--config", path, "explain", "8", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["match"]["cycle_alias"] == "Bi-Annually -> semiannually"
    assert data["last_change"]["cycle"] == "semiannually"
    assert data["approximate_cost"] == str((await values(conn))["8"])
    await conn.close()


async def test_approve_logs_under_the_run_id_the_ledger_records(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every log line of an approval (its recheck included) carries the id of its ledger row."""
    hostwinds.instances = [instance(1)]
    conn = await connect(db_url)
    await seed(conn, [("1", "active", None)])
    assert (await cost_sync(capsys, "--once"))[0] == 0
    hostwinds.plans = scaled_plans("10")
    assert (await cost_sync(capsys, "--once"))[0] == 0
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["approve", "--all", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured
    run_id = json.loads(captured.out)["run_id"]
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert "approve.finished" in events
    assert len(events) > 1, events  # the recheck's own lines too
    assert {line.get("run_id") for line in lines} == {run_id}
    ledger = await conn.fetch("SELECT id::text, trigger FROM cost_sync_runs WHERE trigger = 'approve'")
    assert [(r["id"], r["trigger"]) for r in ledger] == [(run_id, "approve")]
    history = await conn.fetchval("SELECT run_id::text FROM cost_sync_history WHERE approved")
    assert history == run_id
    await conn.close()
