"""First contact with an account: doctor, plan_key by evidence, capture and replay, the schema gate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from cost_sync.cli import main as cli
from cost_sync.cli.doctor import DoctorReport, run_doctor
from cost_sync.hostwinds.capture import MANIFEST, ReplayServer, load_capture
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.hostwinds.sandbox import Fleet, SandboxServer, load_demo_fleet
from cost_sync.run.sync import run_once
from cost_sync.settings import Settings, load_settings
from tests.conftest import FIXTURE_TABLE, Databases
from tests.integration.conftest import seed, values

pytestmark = pytest.mark.db

ALIASES = json.dumps({"Bi-Annually": "semiannually"})
CHECKS = [
    "settings",
    "database",
    "writes",
    "vps_instances",
    "migrations",
    "hostwinds",
    "get_instances",
    "get_price_list",
    "get_billingcycle_prices",
    "matching",
    "cycles",
    "plan_join",
]


def demo_rows(fleet: Fleet) -> list[tuple[str | None, str, str | None]]:
    """One active row per fleet instance, named by its serviceid."""
    return [(str(i["serviceid"]), "active", None) for i in fleet.instances]


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


def statuses(report: DoctorReport) -> dict[str, str]:
    """Check name -> status."""
    return {c.name: c.status for c in report.checks}


def check(report: DoctorReport, name: str) -> Any:
    """The named check."""
    return next(c for c in report.checks if c.name == name)


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    """The SANDBOX Hostwinds API serving the demo fleet."""
    async with SandboxServer(load_demo_fleet()) as server:
        yield server


@pytest_asyncio.fixture
async def unmigrated_url(empty_db_url: str) -> str:
    """A database holding the platform's vps_instances table but none of cost-sync's migrations."""
    conn = await asyncpg.connect(empty_db_url)
    try:
        await conn.execute(FIXTURE_TABLE)
    finally:
        await conn.close()
    return empty_db_url


async def sync_values(url: str, db_url: str, settings: Settings, key: str) -> dict[str, Decimal | None]:
    """Seed the demo rows, run one sync against ``url``, return the stored values."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await seed(pool, demo_rows(load_demo_fleet()))
        async with httpx.AsyncClient() as http:
            client = HostwindsClient(http, key, url=url, requests_per_second=None)
            await run_once(client=client, pool=pool, settings=settings)
        return await values(pool)
    finally:
        await pool.close()


async def test_doctor_against_the_sandbox_passes_every_check(
    sandbox: SandboxServer, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every check passes, in order, and `cost-sync doctor --json` exits 0 saying so."""
    conn = await asyncpg.connect(db_url)
    await seed(conn, demo_rows(sandbox.fleet))
    before = await conn.fetch("SELECT * FROM vps_instances ORDER BY id")
    env = environ(sandbox.url, db_url, sandbox.fleet.api_key)

    report = await run_doctor(environ=env)

    assert [c.name for c in report.checks] == CHECKS
    assert statuses(report) == dict.fromkeys(CHECKS, "pass"), report.lines()
    assert "product_id matches `id` for 13 of 13 instances and the names agree for 13" in (
        check(report, "plan_join").evidence
    )
    assert "Bi-Annually 1 (alias: semiannually)" in check(report, "cycles").evidence
    assert sandbox.requests["get_billingcycle_prices"] == 5

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = await asyncio.to_thread(cli.main, ["doctor", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["ok"] is True
    assert [c["status"] for c in out["checks"]] == ["pass"] * len(CHECKS)
    assert await conn.fetch("SELECT * FROM vps_instances ORDER BY id") == before
    assert await conn.fetchval("SELECT count(*) FROM cost_sync_runs") == 0
    await conn.close()


async def test_doctor_without_migrations_fails_with_the_hint_and_writes_nothing(
    sandbox: SandboxServer,
    unmigrated_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database without cost-sync's migrations: the migrations check fails with the fix; exit 1."""
    for name, value in environ(sandbox.url, unmigrated_url, sandbox.fleet.api_key).items():
        monkeypatch.setenv(name, value)

    code = await asyncio.to_thread(cli.main, ["doctor"])

    out = capsys.readouterr().out
    assert code == 1
    assert "fail  migrations" in out
    assert "fix: run `cost-sync migrate`" in out
    conn = await asyncpg.connect(unmigrated_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('cost_sync_migrations')") is None
    finally:
        await conn.close()


async def test_doctor_with_a_wrong_key_fails_without_printing_it(
    sandbox: SandboxServer, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostwinds refusing the key fails the hostwinds check with the fix; the key is in no output."""
    wrong = "WRONG-key-4c1d9e-must-not-appear"
    for name, value in environ(sandbox.url, db_url, wrong).items():
        monkeypatch.setenv(name, value)

    text_code = await asyncio.to_thread(cli.main, ["doctor"])
    text = capsys.readouterr()
    json_code = await asyncio.to_thread(cli.main, ["doctor", "--json"])
    as_json = capsys.readouterr()

    assert (text_code, json_code) == (1, 1)
    assert "fail  hostwinds" in text.out
    assert "allow-list" in text.out
    hostwinds = next(c for c in json.loads(as_json.out)["checks"] if c["name"] == "hostwinds")
    assert hostwinds["status"] == "fail"
    for stream in (text.out, text.err, as_json.out, as_json.err):
        assert wrong not in stream


async def test_doctor_finds_rids_and_plan_key_rid_prices_them_right(
    databases: Databases, migrated_template: str
) -> None:
    """A fleet whose product_ids are rids: doctor says the data supports rid; with it the values are right."""
    expected_db = await databases.create(template=migrated_template)
    async with SandboxServer(load_demo_fleet()) as normal:
        env = environ(normal.url, expected_db, normal.fleet.api_key)
        expected = await sync_values(
            normal.url, expected_db, load_settings(environ=env), normal.fleet.api_key
        )

    async with SandboxServer(rid_fleet()) as sandbox:
        db_url = await databases.create(template=migrated_template)
        conn = await asyncpg.connect(db_url)
        await seed(conn, demo_rows(sandbox.fleet))
        await conn.close()
        env = environ(sandbox.url, db_url, sandbox.fleet.api_key)

        by_id = await run_doctor(environ=env)
        plan_join = check(by_id, "plan_join")
        assert plan_join.status == "fail"
        assert "matches `rid` for 13 and the names agree for 13" in plan_join.evidence
        assert "the data supports `rid`" in plan_join.evidence
        assert 'plan_key = "rid"' in plan_join.fix

        rid_env = {**env, "COST_SYNC_HOSTWINDS_PLAN_KEY": "rid"}
        by_rid = await run_doctor(environ=rid_env)
        assert check(by_rid, "plan_join").status == "pass"

        got = await sync_values(
            sandbox.url,
            await databases.create(template=migrated_template),
            load_settings(environ=rid_env),
            sandbox.fleet.api_key,
        )
    assert got == expected
    assert got["1234576"] == Decimal("4.79")  # Bi-Annually, aliased: 28.74 / 6


async def test_doctor_warns_about_a_server_uuid_on_two_services(db_url: str) -> None:
    """Two services carry one server_uuid and a row is keyed by it: matching warns with the fix."""
    fleet = load_demo_fleet()
    first, second = fleet.instances[0], fleet.instances[1]
    instances = [first, {**second, "server_uuid": str(first["server_uuid"]).upper()}, *fleet.instances[2:]]
    async with SandboxServer(dataclasses.replace(fleet, instances=instances)) as sandbox:
        conn = await asyncpg.connect(db_url)
        await seed(conn, [*demo_rows(sandbox.fleet)[1:], (str(first["server_uuid"]), "active", None)])
        await conn.close()
        report = await run_doctor(environ=environ(sandbox.url, db_url, sandbox.fleet.api_key))
    matching = check(report, "matching")
    assert matching.status == "warn"
    services = ", ".join(str(i["serviceid"]) for i in (first, second))
    assert f"1 server_uuid(s) on more than one service id ({services}), naming 1 row(s)" in matching.evidence
    assert "set its hostwinds_instance_id to the serviceid" in matching.fix
    assert str(first["server_uuid"]) not in " ".join(report.lines())


async def test_capture_then_replay_computes_the_same_values_and_keeps_no_secret(
    sandbox: SandboxServer, databases: Databases, migrated_template: str, tmp_path: Path
) -> None:
    """sandbox -> doctor --capture -> replay: a sync computes the same values; DIR holds no secret."""
    capture_dir = tmp_path / "capture"
    db_url = await databases.create(template=migrated_template)
    conn = await asyncpg.connect(db_url)
    await seed(conn, demo_rows(sandbox.fleet))
    await conn.close()
    env = environ(sandbox.url, db_url, sandbox.fleet.api_key)

    report = await run_doctor(environ=env, capture_dir=capture_dir)

    assert report.ok, report.lines()
    assert check(report, "capture").status == "pass"
    manifest = json.loads((capture_dir / MANIFEST).read_text())
    actions = [a["action"] for a in manifest["answers"]]
    assert actions.count("get_instances") == 1
    assert actions.count("get_price_list") == 2  # ssd and nvme
    assert actions.count("get_billingcycle_prices") == 13
    secrets = [sandbox.fleet.api_key] + [
        str(i[field]) for i in sandbox.fleet.instances for field in ("password", "configkey") if field in i
    ]
    assert len(secrets) > 10
    for path in capture_dir.iterdir():
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {path.name}"
        assert '"password":' not in text
        assert '"configkey":' not in text

    expected = await sync_values(
        sandbox.url,
        await databases.create(template=migrated_template),
        load_settings(environ=env),
        sandbox.fleet.api_key,
    )
    replay_key = "any-key-the-replay-accepts"
    async with ReplayServer(load_capture(capture_dir)) as replay:
        replay_env = environ(replay.url, db_url, replay_key)
        got = await sync_values(
            replay.url,
            await databases.create(template=migrated_template),
            load_settings(environ=replay_env),
            replay_key,
        )
        assert replay.missing == []
    assert got == expected
    assert sum(v is not None for v in got.values()) >= 11

    async with (
        ReplayServer(load_capture(capture_dir), api_key="only-this") as strict,
        httpx.AsyncClient() as http,
    ):
        refused = await http.post(strict.url, data={"action": "get_instances", "API": "other"})
        allowed = await http.post(strict.url, data={"action": "get_instances", "API": "only-this"})
    assert refused.json()[0]["message"] == "Not Authorized!"
    assert "success" in allowed.json()


async def test_once_without_migrations_asks_hostwinds_nothing(
    sandbox: SandboxServer,
    unmigrated_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--once` and `--once --dry-run` on an unmigrated database exit 2 with the hint before any call."""
    for name, value in environ(sandbox.url, unmigrated_url, sandbox.fleet.api_key).items():
        monkeypatch.setenv(name, value)

    once = await asyncio.to_thread(cli.main, ["--once"])
    once_err = capsys.readouterr().err
    dry = await asyncio.to_thread(cli.main, ["--once", "--dry-run"])
    dry_err = capsys.readouterr().err
    resync = await asyncio.to_thread(cli.main, ["resync", "--all"])
    resync_err = capsys.readouterr().err

    assert (once, dry, resync) == (2, 2, 2)
    for err in (once_err, dry_err, resync_err):
        assert "run `cost-sync migrate`" in err
    assert sum(sandbox.requests.values()) == 0


async def test_history_records_the_cycle_alias_a_value_was_priced_through(
    sandbox: SandboxServer, db_url: str
) -> None:
    """The history row of the aliased Bi-Annually instance names the spelling; the others hold NULL."""
    env = environ(sandbox.url, db_url, sandbox.fleet.api_key)
    await sync_values(sandbox.url, db_url, load_settings(environ=env), sandbox.fleet.api_key)
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT hostwinds_instance_id, cycle, cycle_alias FROM cost_sync_history"
            " WHERE cycle_alias IS NOT NULL"
        )
        total = await conn.fetchval("SELECT count(*) FROM cost_sync_history")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("1234576", "semiannually", "Bi-Annually")]
    assert total >= 10


async def test_an_unreadable_cycle_price_answer_fails_doctor_and_is_still_captured(
    db_url: str, tmp_path: Path
) -> None:
    """A cycle-price body in no known shape fails its check, naming the service, and lands in the capture."""
    demo = load_demo_fleet()
    fleet = dataclasses.replace(demo, cycle_prices={**demo.cycle_prices, 1234567: {"rate": {"usd": "4.99"}}})
    conn = await asyncpg.connect(db_url)
    await seed(conn, demo_rows(fleet))
    await conn.close()
    async with SandboxServer(fleet) as sandbox:
        report = await run_doctor(
            environ=environ(sandbox.url, db_url, fleet.api_key), capture_dir=tmp_path / "capture"
        )
    cycle = check(report, "get_billingcycle_prices")
    assert cycle.status == "fail"
    assert "service 1234567: the answer names no billing cycle" in cycle.evidence
    assert check(report, "capture").status == "pass"
    assert not report.ok
    saved = json.loads((tmp_path / "capture" / "get_billingcycle_prices.serviceid-1234567.json").read_text())
    assert saved == {"success": {"rate": {"usd": "4.99"}}}
