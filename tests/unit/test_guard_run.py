"""The guard inside a run, on the in-memory store: held changes, their life cycle, refused runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from cost_sync.errors import GuardRefused
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import RunResult, SyncRun
from cost_sync.settings import Settings
from cost_sync.store.memory import MemoryStore
from tests.fakes import PLANS, FakeHostwinds, instance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def hostwinds() -> FakeHostwinds:
    """Ten monthly instances on plan 101 (9.99)."""
    fake = FakeHostwinds()
    fake.instances = [instance(n) for n in range(1, 11)]
    return fake


async def run(client: HostwindsClient, store: MemoryStore, minutes: int = 0, **options: Any) -> RunResult:
    """One run, ``minutes`` after T0 (full: every service asked afresh)."""
    return await SyncRun(
        client=client,
        store=store,
        settings=Settings(hostwinds={"max_concurrency": 1}),  # type: ignore[arg-type]
        now=lambda: T0 + timedelta(minutes=minutes),
        request=RunRequest(full=True, **options),
    ).execute()


def tenfold(hostwinds: FakeHostwinds, factor: str = "10") -> None:
    """Every price-list price multiplied by ``factor`` (the glitch from the issue)."""
    plans = []
    for plan in PLANS:
        scaled = dict(plan)
        for cycle in ("monthly", "quarterly", "annually"):
            if cycle in scaled:
                value = Decimal(str(scaled[cycle]))
                scaled[cycle] = str(value * Decimal(factor)) if value > 0 else scaled[cycle]
        plans.append(scaled)
    hostwinds.plans = plans


async def test_first_prices_are_applied_then_a_tenfold_glitch_is_held(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """First prices are never held; a x10 change of every price is held, values kept, logged once."""
    first = await run(client, store)
    assert first.report.updated == 10
    assert first.report.held == 0
    tenfold(hostwinds)
    with capture_logs() as logs:
        glitch = await run(client, store, minutes=5)
    assert glitch.report.held == 10
    assert glitch.report.updated == 0
    assert {store.value(str(n)) for n in range(1, 11)} == {Decimal("9.99")}
    assert glitch.report.total_after == glitch.report.total_before == Decimal("99.90")
    assert {e.change.proposed.monthly for e in store.held.values()} == {Decimal("99.90")}
    assert [e["event"] for e in logs].count("sync.changes_held") == 1


async def test_held_change_is_kept_replaced_and_cleared(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """Proposed again: kept with its first run; another value: replaced; no longer proposed: cleared."""
    await run(client, store)
    tenfold(hostwinds)
    held = await run(client, store, minutes=5)
    row = next(iter(store.held))
    assert store.held[row].run_id == held.report.run_id
    await run(client, store, minutes=10)
    assert store.held[row].run_id == held.report.run_id  # same proposal: same since and run
    tenfold(hostwinds, "20")
    replaced = await run(client, store, minutes=15)
    assert store.held[row].run_id == replaced.report.run_id
    assert store.held[row].change.proposed.monthly == Decimal("199.80")
    tenfold(hostwinds, "1")
    settled = await run(client, store, minutes=20)
    assert settled.report.held == 0
    assert store.held == {}


async def test_accept_changes_applies_without_holding(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """--accept-changes writes the x10 prices and holds nothing."""
    await run(client, store)
    tenfold(hostwinds)
    result = await run(client, store, minutes=5, accept_changes=True)
    assert result.report.updated == 10
    assert result.report.held == 0
    assert store.value("1") == Decimal("99.90")
    assert store.held == {}


async def test_shrunken_instance_list_applies_nothing(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """Hostwinds answering three of ten instances: the run refuses, writes nothing, records a failure."""
    await run(client, store)
    hostwinds.instances = hostwinds.instances[:3]
    hostwinds.plans = [dict(p, monthly="5.00") if p["id"] == 101 else p for p in PLANS]
    with pytest.raises(GuardRefused, match="7 of 10 rows") as refused:
        await run(client, store, minutes=5)
    assert refused.value.exit_code == 1
    assert "last good run" in str(refused.value)
    assert {store.value(str(n)) for n in range(1, 11)} == {Decimal("9.99")}
    assert store.runs[-1].outcome == "failed"
    assert store.row_states
    assert all(s.matched for s in store.row_states.values())


async def test_price_list_losing_the_plans_in_use_applies_nothing(
    hostwinds: FakeHostwinds, client: HostwindsClient, store: MemoryStore
) -> None:
    """Half the fleet on plan 102; the price list loses 102: half the plans in use are gone, refused."""
    hostwinds.instances = [instance(n, product_id=101 if n <= 5 else 102) for n in range(1, 11)]
    first = await run(client, store)
    assert first.report.plans_in_use == [101, 102]
    hostwinds.plans = [p for p in PLANS if p["id"] != 102]
    with pytest.raises(GuardRefused, match="lost 1 of the 2 plans"):
        await run(client, store, minutes=5)
