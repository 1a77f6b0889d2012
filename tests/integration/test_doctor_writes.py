"""doctor and `migrate --check` against databases where every run would fail at its write."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cost_sync.cli import main as cli
from cost_sync.cli.doctor import run_doctor
from cost_sync.errors import MigrationError
from cost_sync.store.migrate import check, migrate

pytestmark = pytest.mark.db


def checks(report: object) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.evidence) for c in report.checks}  # type: ignore[attr-defined]


async def test_doctor_fails_writes_on_a_read_only_database(db_url: str) -> None:
    """default_transaction_read_only = on for the database (every run fails at its write): `writes` fails."""
    conn = await asyncpg.connect(db_url)
    name = await conn.fetchval("SELECT current_database()")
    report = await run_doctor(environ={"COST_SYNC_DATABASE_URL": db_url})
    assert checks(report)["writes"][0] == "pass", report.lines()
    await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    await conn.close()
    report = await run_doctor(environ={"COST_SYNC_DATABASE_URL": db_url})
    status, evidence = checks(report)["writes"]
    assert status == "fail"
    assert "default_transaction_read_only = on" in evidence
    assert not report.ok


async def test_doctor_fails_writes_for_a_user_without_update(db_url: str) -> None:
    """Second way: a user that may read but not update vps_instances or insert into the ledger."""
    role = f"cs_reader_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(db_url)
    await conn.execute(f"CREATE ROLE {role} LOGIN")
    await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        parts = urlsplit(db_url)
        host = parts.netloc.rpartition("@")[2]
        reader_url = urlunsplit(parts._replace(netloc=f"{role}@{host}"))
        report = await run_doctor(environ={"COST_SYNC_DATABASE_URL": reader_url})
        status, evidence = checks(report)["writes"]
        assert status == "fail", report.lines()
        assert "UPDATE on vps_instances" in evidence
        assert "INSERT on cost_sync_runs" in evidence
    finally:
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_migrate_check_fails_without_the_updated_column(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """vps_instances without `updated` (every run fails at its write): `migrate --check` exit 1 naming it,
    and `migrate` does not report success either."""
    conn = await asyncpg.connect(db_url)
    await conn.execute("ALTER TABLE vps_instances DROP COLUMN updated")
    problems = await check(conn)
    assert any("missing updated" in p for p in problems), problems
    monkeypatch.setenv("COST_SYNC_DATABASE_URL", db_url)
    assert await asyncio.to_thread(cli.main, ["migrate", "--check"]) == 1
    assert "missing updated" in capsys.readouterr().out
    with pytest.raises(MigrationError, match=r"still does not verify: .*missing updated"):
        await migrate(conn)
    await conn.close()
