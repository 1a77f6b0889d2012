"""The daemon's runner and schedule math: one run at a time, coalesced follow-ups, staleness."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from cost_sync.daemon.runs import Runner, RunRecord, RunState
from cost_sync.daemon.schedule import cron_trigger, longest_gap, success_too_old
from cost_sync.domain.models import PriceCacheReport, RunReport
from cost_sync.errors import CostSyncError


class SlowSync:
    """Stands in for run_once: records what each run covered and holds each run until released."""

    def __init__(self) -> None:
        self.covered: list[list[str] | None] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, record: RunRecord) -> RunReport:
        self.covered.append(record.instances)
        self.started.set()
        await self.release.wait()
        now = datetime.now(UTC)
        return RunReport(
            run_id=record.run_id, trigger=record.trigger, outcome="succeeded", started_at=now, finished_at=now
        )


async def test_triggers_during_a_run_coalesce_into_one_follow_up() -> None:
    """Ten triggers while a run is in flight make exactly one follow-up run covering their union."""
    sync = SlowSync()
    runner = Runner(sync)
    first = runner.request(["a"], "resync")
    await sync.started.wait()
    follow_ups = [runner.request([f"i{n % 3}"], "resync") for n in range(10)]
    assert len({r.run_id for r in follow_ups}) == 1
    assert follow_ups[0].run_id != first.run_id
    assert follow_ups[0].requests == 10
    sync.release.set()
    await follow_ups[0].done.wait()
    assert sync.covered == [["a"], ["i0", "i1", "i2"]]
    assert first.state is RunState.SUCCEEDED
    assert follow_ups[0].state is RunState.SUCCEEDED


async def test_targeted_resync_goes_before_a_queued_whole_fleet_run() -> None:
    """A resync queued behind a whole-fleet trigger runs first, on its own, then the fleet run."""
    sync = SlowSync()
    runner = Runner(sync)
    runner.request(None, "schedule")
    await sync.started.wait()
    fleet = runner.request(None, "schedule")
    targeted = runner.request(["x"], "resync", full=True)
    assert fleet.run_id != targeted.run_id
    sync.release.set()
    await fleet.done.wait()
    assert sync.covered == [None, ["x"], None]
    assert targeted.full
    assert not fleet.full


def report_with(record: RunRecord, *, pending: int, asked: int) -> RunReport:
    """A succeeded report whose price cache left ``pending`` services after asking ``asked``."""
    now = datetime.now(UTC)
    return RunReport(
        run_id=record.run_id,
        trigger=record.trigger,
        outcome="succeeded",
        started_at=now,
        finished_at=now,
        price_cache=PriceCacheReport(pending=pending, asked=asked),
    )


async def test_whole_fleet_run_leaving_pending_rows_starts_the_next_at_once() -> None:
    """While a fleet run leaves services pending and makes progress, another starts; resyncs go first."""
    triggers: list[tuple[str, list[str] | None]] = []
    runner: Runner

    async def budgeted(record: RunRecord) -> RunReport:
        triggers.append((record.trigger, record.instances))
        if len(triggers) == 1:
            runner.request(["after-upgrade"], "resync", full=True)
        pending = max(0, 30 - 10 * len([t for t in triggers if t[1] is None]))
        return report_with(record, pending=pending if record.instances is None else 0, asked=10)

    runner = Runner(budgeted)
    first = runner.request(None, "startup")
    await first.done.wait()
    for _ in range(50):
        if not runner.busy:
            break
        await asyncio.sleep(0.01)
    assert triggers == [
        ("startup", None),
        ("resync", ["after-upgrade"]),
        ("catchup", None),
        ("catchup", None),
    ]


async def test_no_catch_up_when_a_run_asked_nothing() -> None:
    """A fleet run that left services pending without asking any does not start another at once."""
    calls = 0

    async def stuck(record: RunRecord) -> RunReport:
        nonlocal calls
        calls += 1
        return report_with(record, pending=5, asked=0)

    runner = Runner(stuck)
    await runner.request(None, "schedule").done.wait()
    await asyncio.sleep(0.05)
    assert calls == 1
    assert not runner.busy


async def test_failed_run_is_recorded_and_next_run_still_happens() -> None:
    """A run that raises is marked failed with its message; the runner keeps serving requests."""
    calls = 0

    async def flaky(record: RunRecord) -> RunReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise CostSyncError("Hostwinds is down")
        now = datetime.now(UTC)
        return RunReport(
            run_id=record.run_id, trigger="t", outcome="succeeded", started_at=now, finished_at=now
        )

    runner = Runner(flaky)
    bad = runner.request(None, "schedule")
    await bad.done.wait()
    assert (bad.state, bad.error) == (RunState.FAILED, "Hostwinds is down")
    good = runner.request(None, "schedule")
    await good.done.wait()
    assert good.state is RunState.SUCCEEDED
    assert runner.get(bad.run_id) is bad
    assert runner.get(uuid.uuid4()) is None


async def test_close_cancels_a_run_that_outlives_the_grace_period() -> None:
    """Closing waits the grace period, then cancels the run and refuses new requests."""
    sync = SlowSync()
    runner = Runner(sync)
    record = runner.request(None, "schedule")
    await sync.started.wait()
    queued = runner.request(None, "schedule")
    assert await runner.close(0.05) is False
    assert record.state is RunState.FAILED
    assert "cancelled" in (record.error or "")
    assert queued.state is RunState.FAILED
    with pytest.raises(CostSyncError, match="shutting down"):
        runner.request(None, "schedule")


async def test_close_lets_a_quick_run_finish() -> None:
    """A run that ends within the grace period is not cancelled."""
    sync = SlowSync()
    runner = Runner(sync)
    record = runner.request(None, "schedule")
    await sync.started.wait()
    asyncio.get_running_loop().call_later(0.05, sync.release.set)
    assert await runner.close(5) is True
    assert record.state is RunState.SUCCEEDED


NOW = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("17 * * * *", timedelta(hours=1)),
        ("*/5 * * * *", timedelta(minutes=5)),
        ("0 3 * * *", timedelta(days=1)),
        ("0 9 * * 1-5", timedelta(days=3)),  # Friday to Monday
        ("0 0 1 * *", timedelta(days=31)),
    ],
)
def test_longest_gap_of_schedules(expression: str, gap: timedelta) -> None:
    """The longest gap between upcoming fire times, weekends and month lengths included."""
    assert longest_gap(cron_trigger(expression), NOW) == gap


@pytest.mark.parametrize(
    ("age", "stale"),
    [
        (None, True),
        (timedelta(minutes=30), False),
        (timedelta(minutes=119), False),
        (timedelta(minutes=121), True),
    ],
)
def test_staleness_allows_one_missed_run(age: timedelta | None, stale: bool) -> None:
    """Ready while the last success is younger than twice the schedule interval."""
    last = None if age is None else NOW - age
    reason = success_too_old(last, cron_trigger("17 * * * *"), NOW)
    assert (reason is not None) is stale


async def test_failed_run_is_logged_once_as_sync_failed() -> None:
    """The daemon says each failed run once, as sync.failed with its run id, trigger and error."""

    async def refused(record: RunRecord) -> RunReport:
        raise CostSyncError("Hostwinds refused the API key")

    runner = Runner(refused)
    with capture_logs() as logs:
        record = runner.request(None, "schedule")
        await record.done.wait()
    failed = [e for e in logs if e["event"] == "sync.failed"]
    assert failed == [
        {
            "event": "sync.failed",
            "log_level": "error",
            "run_id": str(record.run_id),
            "trigger": "schedule",
            "error": "Hostwinds refused the API key",
        }
    ]
