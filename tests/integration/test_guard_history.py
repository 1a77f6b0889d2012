"""The guard against cost-sync's own history, on real PostgreSQL through the command line: drift in
small steps, a value cleared by someone after cost-sync priced it, a serviceid given to another server."""

from __future__ import annotations

import json
from decimal import Decimal

import asyncpg
import pytest

from tests.integration.conftest import FakeHostwinds, instance, seed, values
from tests.integration.test_trust import cost_sync, env, scaled_plans

pytestmark = pytest.mark.db

__all__ = ["env"]  # a fixture, used by name below


async def once(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out = await cost_sync(capsys, "--once", "--json")
    assert code == 0, out
    report: dict[str, object] = json.loads(out)
    return report


@pytest.mark.parametrize(("step", "after_one", "held"), [("1.45", "14.49", "21.00"), ("0.7", "6.99", "4.90")])
async def test_drift_in_steps_under_the_ratio_is_held_against_the_window_start(
    hostwinds: FakeHostwinds,
    db_url: str,
    env: None,
    capsys: pytest.CaptureFixture[str],
    step: str,
    after_one: str,
    held: str,
) -> None:
    """+45% a run (and, the second way, -30% a run): the second step is held, compared with 9.99."""
    hostwinds.instances = [instance(1)]
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None)])
    await once(capsys)
    assert (await values(conn))["1"] == Decimal("9.99")
    hostwinds.plans = scaled_plans(step)
    await once(capsys)
    assert (await values(conn))["1"] == Decimal(after_one)
    hostwinds.plans = scaled_plans(str(Decimal(step) ** 2))
    report = await once(capsys)
    assert (await values(conn))["1"] == Decimal(after_one)
    rows = report["held"]["rows"]  # type: ignore[index]
    assert [r["proposed"] for r in rows] == [held]
    assert "9.99 (the value at the start of the drift window)" in rows[0]["reason"]
    # Approved, the new value is the anchor: the next step of the same size is applied.
    assert (await cost_sync(capsys, "approve", "--instance", "1"))[0] == 0
    assert (await values(conn))["1"] == Decimal(held)
    hostwinds.plans = scaled_plans(str(Decimal(step) ** 3))
    report = await once(capsys)
    assert report["held"]["count"] == 0  # type: ignore[index]
    assert (await values(conn))["1"] != Decimal(held)
    await conn.close()


@pytest.mark.parametrize("cleared", ["NULL", "0.00"])
async def test_a_value_cleared_after_cost_sync_priced_it_is_not_a_first_price(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str], cleared: str
) -> None:
    """Priced 9.99, then set to NULL (or 0.00) by someone, then x1000 at Hostwinds: held, not applied;
    a row cost-sync never priced takes the same x1000 price as its first."""
    hostwinds.instances = [instance(1), instance(2)]
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None)])
    await once(capsys)
    await conn.execute(f"UPDATE vps_instances SET approximate_cost = {cleared}")
    await seed(conn, [("2", "active", None)])
    hostwinds.plans = scaled_plans("1000")
    report = await once(capsys)
    rows = report["held"]["rows"]  # type: ignore[index]
    assert [(r["hostwinds_instance_id"], r["proposed"]) for r in rows] == [("1", "9990.00")]
    shown = "NULL" if cleared == "NULL" else "0.00"
    assert f"9.99 (the last value cost-sync wrote, the row holds {shown} now)" in rows[0]["reason"]
    after = await values(conn)
    assert after["1"] == (None if cleared == "NULL" else Decimal("0.00"))
    assert after["2"] == Decimal("9990.00")
    await conn.close()


async def test_a_serviceid_given_to_another_server_is_asked_again(
    hostwinds: FakeHostwinds, db_url: str, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Service 1's server is replaced by another under the same serviceid: its cached price is not reused."""
    hostwinds.instances = [instance(1)]
    hostwinds.cycle_prices = {1: {"monthly": "4.99"}}
    conn = await asyncpg.connect(db_url)
    await seed(conn, [("1", "active", None)])
    await once(capsys)
    assert (await values(conn))["1"] == Decimal("4.99")
    hostwinds.instances = [instance(1, server_uuid="0b3a6f0e-7f0c-4a8e-9a55-2d1f3c4b5a69")]
    hostwinds.cycle_prices = {1: {"monthly": "5.99"}}
    report = await once(capsys)
    assert report["price_cache"]["reasons"]["changed"] == 1  # type: ignore[index]
    assert (await values(conn))["1"] == Decimal("5.99")
    # The same server again: the new answer is reused, nothing asked.
    report = await once(capsys)
    assert report["price_cache"]["hits"] == 1  # type: ignore[index]
    await conn.close()
