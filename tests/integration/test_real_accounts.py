"""Real accounts are messier: odd answers shrink to the rows they concern, against the sandbox and
a real PostgreSQL (the sandbox's ``openapi`` price-list shape, error envelopes in both forms)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from cost_sync.cli import main as cli
from cost_sync.cli.doctor import run_doctor
from cost_sync.hostwinds.capture import ReplayServer, load_capture
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import CUSTOM_PLAN_ID, Fleet, SandboxServer, generate_fleet, load_demo_fleet
from cost_sync.run import sync as sync_module
from cost_sync.run.sync import RunResult, run_once
from cost_sync.settings import Settings, load_settings
from tests.integration.conftest import seed, values

pytestmark = pytest.mark.db

ALIASES = json.dumps({"Bi-Annually": "semiannually"})
CUSTOM_SERVICE = 1234590


def environ(url: str, db_url: str, key: str, **extra: str) -> dict[str, str]:
    """cost-sync's environment for a run against ``url``."""
    return {
        "COST_SYNC_DATABASE_URL": db_url,
        "COST_SYNC_HOSTWINDS_URL": url,
        "COST_SYNC_HOSTWINDS_API_KEY": key,
        "COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND": "0",
        "COST_SYNC_HOSTWINDS_CYCLE_ALIASES": ALIASES,
        **extra,
    }


def openapi_fleet(**changes: Any) -> Fleet:
    """The demo fleet in the OpenAPI price-list shape, plus one instance on the custom plan."""
    fleet = load_demo_fleet()
    custom = {
        **fleet.instances[0],
        "serviceid": CUSTOM_SERVICE,
        "server_uuid": "00000000-0000-4000-8000-000000000060",
        "product_id": CUSTOM_PLAN_ID,
        "product_name": "Custom VPS (sandbox)",
        "billingcycle": "Monthly",
    }
    return dataclasses.replace(
        fleet, instances=[*fleet.instances, custom], price_list_shape="openapi", **changes
    )


def rows(fleet: Fleet) -> list[tuple[str | None, str, str | None]]:
    """One active row per fleet instance, named by its serviceid."""
    return [(str(i["serviceid"]), "active", None) for i in fleet.instances]


async def sync(
    server: SandboxServer | ReplayServer, db_url: str, settings: Settings, **kwargs: Any
) -> RunResult:
    """One run against the sandbox, on a pool of the test database."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with httpx.AsyncClient() as http:
            key = server.fleet.api_key if isinstance(server, SandboxServer) else "any-key"
            client = HostwindsClient(http, key, url=server.url, requests_per_second=None)
            return await run_once(client=client, pool=pool, settings=settings, **kwargs)
    finally:
        await pool.close()


def reasons(result: RunResult) -> dict[str, str]:
    """hostwinds_instance_id -> unpriced reason (or the price source) of every row."""
    return {
        str(o.row.hostwinds_instance_id): getattr(o.result, "reason", None) or o.result.source  # type: ignore[union-attr]
        for o in result.outcomes
    }


async def expected_values(db_url: str) -> dict[str, Decimal | None]:
    """What the demo fleet in its flat shape stores, with the same settings."""
    async with SandboxServer(load_demo_fleet()) as flat:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(flat.fleet))
        await conn.close()
        await sync(flat, db_url, load_settings(environ=environ(flat.url, db_url, flat.fleet.api_key)))
        conn = await asyncpg.connect(db_url)
        try:
            return await values(conn)
        finally:
            await conn.close()


@pytest.mark.parametrize("plan_key", ["id", "rid"])
async def test_a_custom_plan_row_next_to_ordinary_rows_prices_every_ordinary_row(
    databases: Any, migrated_template: str, plan_key: str
) -> None:
    """The OpenAPI-shaped list with a custom plan: every ordinary row priced as from the flat list,
    the custom one unpriced ``custom_plan`` and named as ``price_list_row_unreadable``."""
    expected = await expected_values(await databases.create(template=migrated_template))
    fleet = openapi_fleet(cycle_prices={}, cycle_prices_shape="empty")
    if plan_key == "rid":
        rid = {(p["id"], p.get("drive_type", "ssd"), p.get("managed", False)): p["rid"] for p in fleet.plans}
        fleet = dataclasses.replace(
            fleet,
            instances=[
                {**i, "product_id": rid.get((int(i["product_id"]), i.get("disk_type", "ssd"), False), 960)}
                for i in fleet.instances
            ],
        )
    db_url = await databases.create(template=migrated_template)
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(server.fleet))
        await conn.close()
        env = environ(server.url, db_url, server.fleet.api_key, COST_SYNC_HOSTWINDS_PLAN_KEY=plan_key)
        result = await sync(server, db_url, load_settings(environ=env))

    conn = await asyncpg.connect(db_url)
    try:
        got = await values(conn)
    finally:
        await conn.close()
    assert result.report.outcome == "succeeded"
    assert reasons(result)[str(CUSTOM_SERVICE)] == "custom_plan"
    assert got.pop(str(CUSTOM_SERVICE)) is None
    # Those the demo prices from their own cycle prices come from the list here ({} answers).
    own = {"1234574", "1234575"}
    assert {k: v for k, v in got.items() if k not in own} == {
        k: v for k, v in expected.items() if k not in own
    }
    assert all(got[k] is not None for k in own)
    [finding] = [
        w
        for w in result.report.warnings
        if w.startswith("price_list_row_unreadable: price list managed=0 drive_type=ssd:")
    ]
    assert f"custom plan {CUSTOM_PLAN_ID if plan_key == 'id' else CUSTOM_PLAN_ID + 900} at answer." in finding
    assert ".pricing" in finding
    # The resource options inside `pricing` never became plans.
    assert not set(result.report.plans_in_use or []) & {1, 2, 3, 4, 11, 12, 21, 22, 31, 41}


async def cost_sync(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in a thread (it runs its own event loop); its exit code and stdout."""
    code = await asyncio.to_thread(cli.main, list(argv))
    out = capsys.readouterr().out
    # The in-process sandbox logs to stdout too: the command's JSON starts at its first "{" line.
    lines = out.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("{")), 0)
    return code, "".join(lines[start:])


@pytest.mark.parametrize("error_form", ["list", "object"])
async def test_a_failed_services_row_is_priced_from_the_list_visible_in_history_and_explain(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error_form: str
) -> None:
    """An error envelope (list at 200 / object at 400) and an unreadable answer: each row is priced
    from the price list; --json, the history and `explain` name the fallback."""
    demo = load_demo_fleet()
    fleet = dataclasses.replace(
        demo,
        error_form=error_form,
        cycle_price_errors={1234568: "A valid serviceid is required.", 1234570: "Invalid Action."},
        cycle_prices={**demo.cycle_prices, 1234569: {"price": "56.94"}},
    )
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        ids = await seed(conn, rows(fleet))
        await conn.close()
        for name, value in environ(server.url, db_url, fleet.api_key).items():
            monkeypatch.setenv(name, value)
        code, out = await cost_sync(capsys, "--log-level", "error", "--once", "--json")
        assert code == 0, out
        report = json.loads(out)
        explained = [
            json.loads((await cost_sync(capsys, "--log-level", "error", "explain", str(sid), "--json"))[1])
            for sid in (1234568, 1234569, 1234570)
        ]

    changes = {c["hostwinds_instance_id"]: c for c in report["changes"]}
    assert changes["1234568"]["new"] == "9.99"  # 29.97 / 3 from the list
    assert (changes["1234568"]["source"], changes["1234568"]["fallback"]) == (
        "price_list",
        "cycle_prices_error",
    )
    assert changes["1234569"]["fallback"] == "cycle_prices_unreadable"
    assert changes["1234570"]["fallback"] == "cycle_prices_error"
    assert changes["1234567"]["fallback"] == "cycle_prices_empty"  # the fleet has no own prices for it
    conn = await asyncpg.connect(db_url)
    try:
        history = {
            r["hostwinds_instance_id"]: (r["source"], r["fallback"])
            for r in await conn.fetch("SELECT hostwinds_instance_id, source, fallback FROM cost_sync_history")
        }
    finally:
        await conn.close()
    assert history["1234568"] == ("price_list", "cycle_prices_error")
    assert history["1234569"] == ("price_list", "cycle_prices_unreadable")
    assert history["1234574"] == ("cycle_prices", None)
    assert [e["last_change"]["fallback"] for e in explained] == [
        "cycle_prices_error",
        "cycle_prices_unreadable",
        "cycle_prices_error",
    ]
    assert ids  # every demo row was seeded


@pytest.mark.parametrize(("shape", "cause"), [("error", "service ids"), ("invalid_action", "does not offer")])
async def test_every_service_failing_is_a_doctor_fail_and_the_run_prices_from_the_list(
    db_url: str, shape: str, cause: str
) -> None:
    """Every get_billingcycle_prices answers one error: doctor FAILs with cause and fix, the run
    carries cycle_prices_unavailable_everywhere and prices every plan-backed row from the list."""
    fleet = dataclasses.replace(load_demo_fleet(), cycle_prices_shape=shape)
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(fleet))
        await conn.close()
        env = environ(server.url, db_url, fleet.api_key)
        report = await run_doctor(environ=env)
        result = await sync(server, db_url, load_settings(environ=env))

    checked = next(c for c in report.checks if c.name == "get_billingcycle_prices")
    assert checked.status == "fail"
    assert checked.evidence.startswith("cycle_prices_unavailable_everywhere: all 5 service(s) asked")
    assert cause in checked.evidence
    assert "fallback cycle_prices_error" in checked.fix
    assert not report.ok
    assert any(w.startswith("cycle_prices_unavailable_everywhere: all 13") for w in result.report.warnings)
    assert result.report.priced_by_source == {"price_list": 12}
    # 1234577: its service failed and plan 104 offers no triennial price: neither source.
    assert result.report.unpriced_by_reason == {"cycle_prices_unavailable": 1}


def rid_fleet() -> Fleet:
    """The demo fleet with every instance's product_id replaced by its plan's rid."""
    fleet = load_demo_fleet()
    rid = {
        (p["id"], p.get("drive_type", "ssd")): p["rid"] for p in fleet.plans if not p.get("managed", False)
    }
    instances = [
        {**i, "product_id": rid[(int(i["product_id"]), i.get("disk_type", "ssd"))]} for i in fleet.instances
    ]
    return dataclasses.replace(fleet, instances=instances)


async def once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> tuple[int, str]:
    """`cost-sync --once` with this environment: its exit code and stderr."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = await asyncio.to_thread(cli.main, ["--log-level", "error", "--once"])
    return code, capsys.readouterr().err


async def test_a_wrong_plan_key_is_mostly_unpriced_exit_1_with_the_fix_and_the_priced_rows_written(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """product_ids are rids, plan_key is "id": the run writes the two rows priced by their own
    cycle prices, records mostly_unpriced in the ledger, prints the plan_key fix and exits 1."""
    fleet = rid_fleet()
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(fleet))
        await conn.close()
        code, err = await once(capsys, monkeypatch, environ(server.url, db_url, fleet.api_key))

    assert code == 1
    assert "mostly_unpriced: 11 of 13 matched rows in scope are unpriced" in err
    assert "top reasons: plan_not_found 11" in err
    assert 'set [hostwinds] plan_key = "rid" (COST_SYNC_HOSTWINDS_PLAN_KEY=rid)' in err
    conn = await asyncpg.connect(db_url)
    try:
        stored = await values(conn)
        ledger = await conn.fetchrow("SELECT outcome, warnings FROM cost_sync_runs")
    finally:
        await conn.close()
    assert stored["1234574"] == Decimal("17.99")  # its own cycle prices: right on its own
    assert stored["1234575"] == Decimal("44.99")
    assert sum(v is not None for v in stored.values()) == 2
    assert ledger["outcome"] == "succeeded"
    assert any(w.startswith("mostly_unpriced: 11 of 13") for w in ledger["warnings"])


async def test_no_row_matching_any_instance_is_nothing_matched_and_exit_1(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostwinds lists 13 instances, the database has no row for any: nothing_matched, exit 1."""
    fleet = load_demo_fleet()
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, [("99999999", "active", None)])
        await conn.close()
        code, err = await once(capsys, monkeypatch, environ(server.url, db_url, fleet.api_key))

    assert code == 1
    assert "nothing_matched: Hostwinds lists 13 instance(s) and no row in scope matches any of them" in err
    assert "13 instance(s) have no row; 1 row(s) in scope" in err
    conn = await asyncpg.connect(db_url)
    try:
        warnings = await conn.fetchval("SELECT warnings FROM cost_sync_runs")
    finally:
        await conn.close()
    assert any(w.startswith("nothing_matched") for w in warnings)


async def test_max_unpriced_ratio_from_the_environment_lets_the_run_pass(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """COST_SYNC_GUARD_MAX_UNPRICED_RATIO=0.9 accepts 11 of 13 unpriced: exit 0, no warning."""
    fleet = rid_fleet()
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(fleet))
        await conn.close()
        env = environ(server.url, db_url, fleet.api_key, COST_SYNC_GUARD_MAX_UNPRICED_RATIO="0.9")
        code, err = await once(capsys, monkeypatch, env)
    assert code == 0
    assert "mostly_unpriced" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--once"],
        ["--once", "--dry-run"],
        ["resync", "--all"],
        ["report"],
        ["explain", "1234567"],
        ["held"],
        ["approve", "--all"],
        ["attribution"],
        ["migrate"],
        ["migrate", "--check"],
    ],
    ids=lambda argv: " ".join(argv),
)
async def test_every_verb_without_the_platform_table_exits_2_with_one_line_that_never_loops(
    empty_db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """No vps_instances: exit 2, one line saying the table is missing and which setting to check;
    never "run `cost-sync migrate`", never a raw database error."""
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", empty_db_url)
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_API_KEY", "never-used")
    monkeypatch.setenv("COST_SYNC_HOSTWINDS_URL", "http://127.0.0.1:9/cloud/api.php")
    code = await asyncio.to_thread(cli.main, ["--log-level", "error", *argv])
    err = capsys.readouterr().err
    assert code == 2
    [line] = err.strip().splitlines()
    assert "this database has no vps_instances table" in line
    assert "check which database COST_SYNC_DATABASE_URL names" in line
    assert "cost-sync migrate" not in line
    assert "UndefinedTable" not in line
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await conn.close()


async def test_doctor_without_the_platform_table_points_at_the_database_not_at_migrate(
    empty_db_url: str,
) -> None:
    """doctor fails vps_instances with the same line and does not send the user to `migrate`."""
    report = await run_doctor(
        environ={"COST_SYNC_DATABASE_URL": empty_db_url, "COST_SYNC_HOSTWINDS_URL": "http://127.0.0.1:9/"}
    )
    checks = {c.name: c for c in report.checks}
    assert checks["vps_instances"].status == "fail"
    assert checks["vps_instances"].evidence.startswith("this database has no vps_instances table")
    assert "cost-sync migrate`" not in checks["migrations"].fix


def outcomes_by_row(result: RunResult) -> dict[str, tuple[Any, ...]]:
    """hostwinds_instance_id -> (monthly or reason, source, fallback) of every row."""
    shown: dict[str, tuple[Any, ...]] = {}
    for o in result.outcomes:
        r = o.result
        shown[str(o.row.hostwinds_instance_id)] = (
            (r.monthly, r.source.value, r.fallback) if hasattr(r, "monthly") else (r.reason.value,)  # type: ignore[union-attr]
        )
    return shown


async def test_the_openapi_shape_and_both_error_forms_round_trip_through_capture_and_replay(
    databases: Any, migrated_template: str, tmp_path: Any
) -> None:
    """sandbox (OpenAPI price list, error objects at HTTP 400) -> doctor --capture -> replay: a sync
    decides every row the same way, the error envelopes come back at their status."""
    fleet = openapi_fleet(error_form="object", cycle_price_errors={1234568: "A valid serviceid is required."})
    capture_dir = tmp_path / "capture"
    db_url = await databases.create(template=migrated_template)
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(fleet))
        await conn.close()
        env = environ(server.url, db_url, fleet.api_key)
        report = await run_doctor(environ=env, capture_dir=capture_dir)
        expected = await sync(
            server, await seeded(databases, migrated_template, fleet), load_settings(environ=env)
        )

    assert report.capture == str(capture_dir)
    manifest = json.loads((capture_dir / "manifest.json").read_text())
    errored = [a for a in manifest["answers"] if a.get("status") == 400]
    assert [a["params"] for a in errored] == [{"serviceid": "1234568"}]
    assert json.loads((capture_dir / errored[0]["file"]).read_text())["result"] == "error"

    async with ReplayServer(load_capture(capture_dir)) as replay:
        replay_env = environ(replay.url, db_url, "any-key")
        got = await sync(
            replay, await seeded(databases, migrated_template, fleet), load_settings(environ=replay_env)
        )
        assert replay.missing == []
    assert outcomes_by_row(got) == outcomes_by_row(expected)
    assert outcomes_by_row(got)["1234568"][2] == "cycle_prices_error"
    assert outcomes_by_row(got)[str(CUSTOM_SERVICE)] == ("custom_plan",)


async def seeded(databases: Any, migrated_template: str, fleet: Fleet) -> str:
    """A fresh migrated database with one row per fleet instance."""
    db_url = await databases.create(template=migrated_template)
    conn = await asyncpg.connect(db_url)
    try:
        await seed(conn, rows(fleet))
    finally:
        await conn.close()
    return db_url


async def test_a_cold_start_gives_every_row_a_provisional_value_at_the_first_commit_then_refines(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """60 rows with no value, 20 requests/s, a 1 s provisional window: after the first commit every
    priceable row has a value (most provisional, counted by `report`); the next run refines them
    from their own cycle prices and nothing stays provisional."""
    monkeypatch.setattr(sync_module, "PROVISIONAL_ASK_SECONDS", 1.0)
    fleet = generate_fleet(60)
    async with SandboxServer(fleet) as server:
        conn = await asyncpg.connect(db_url)
        await seed(conn, rows(fleet))
        await conn.close()
        env = environ(server.url, db_url, fleet.api_key, COST_SYNC_HOSTWINDS_REQUESTS_PER_SECOND="20")
        settings = load_settings(environ=env)
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            async with httpx.AsyncClient() as http:
                client = HostwindsClient(http, fleet.api_key, url=server.url, requests_per_second=20)
                first = await run_once(client=client, pool=pool, settings=settings)
                after_first = await values(pool)
                history = await pool.fetch("SELECT hostwinds_instance_id, provisional FROM cost_sync_history")
                for name, value in env.items():
                    monkeypatch.setenv(name, value)
                code, out = await cost_sync(capsys, "--log-level", "error", "report", "--json")
                report = json.loads(out)
                second = await run_once(client=client, pool=pool, settings=settings)
                after_second = await values(pool)
                code2, out = await cost_sync(capsys, "--log-level", "error", "report", "--json")
                report2 = json.loads(out)
        finally:
            await pool.close()

    unpriceable = {k for k, v in after_second.items() if v is None}
    assert first.report.price_cache.pending > 0
    still_pending = {
        str(o.row.hostwinds_instance_id)
        for o in first.outcomes
        if getattr(o.result, "reason", None) == "pending"
    }
    # Every row the window did not reach has its provisional value, unless the list cannot price it.
    assert still_pending <= unpriceable
    assert first.report.provisional == first.report.price_cache.pending - len(still_pending)
    assert first.report.provisional > 0
    assert {k for k, v in after_first.items() if v is None} == unpriceable
    assert sum(1 for r in history if r["provisional"]) == first.report.provisional
    assert code == 0
    assert report["provisional"] == first.report.provisional
    assert second.report.price_cache.pending == 0
    assert second.report.provisional == 0
    assert second.report.price_cache.reasons["new"] == first.report.price_cache.pending
    assert code2 == 0
    assert report2["provisional"] == 0
    # Refined values come from the services' own prices: some differ from the list's estimate.
    assert any(after_second[k] != after_first[k] for k in after_first if k not in unpriceable)
