"""The daemon's metrics for dashboards and alerts: failures in a row, a refused key, held age, progress."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cost_sync.daemon.metrics import Metrics
from cost_sync.daemon.runs import RunRecord
from cost_sync.domain.models import RunReport
from cost_sync.errors import HostwindsAuthError, HostwindsTransientError
from cost_sync.hostwinds.client import HostwindsClient


async def metrics() -> Metrics:
    async with httpx.AsyncClient() as http:
        return Metrics(HostwindsClient(http, "k", url="http://127.0.0.1:9/"))


def samples(m: Metrics) -> dict[str, float]:
    """Unlabelled samples by name."""
    text = generate_latest(m.registry).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def report() -> RunReport:
    now = datetime.now(UTC)
    return RunReport(
        run_id=uuid.uuid4(), trigger="schedule", outcome="succeeded", started_at=now, finished_at=now
    )


async def test_failed_runs_in_a_row_count_up_and_a_success_resets_them() -> None:
    """cost_sync_runs_failed_consecutive counts failures since the last success."""
    m = await metrics()
    assert samples(m)["cost_sync_runs_failed_consecutive"] == 0
    for _ in range(3):
        m.failed("schedule", HostwindsTransientError("timeout"), full=True)
    assert samples(m)["cost_sync_runs_failed_consecutive"] == 3
    m.observe("schedule", report(), full=True)
    assert samples(m)["cost_sync_runs_failed_consecutive"] == 0


async def test_key_refused_is_one_only_while_the_last_run_failed_on_the_key() -> None:
    """A refused key (also when raised from inside another error) sets 1; another failure or a success, 0."""
    m = await metrics()
    m.failed("schedule", HostwindsAuthError("refused"), full=True)
    assert samples(m)["cost_sync_hostwinds_key_refused"] == 1
    m.failed("schedule", HostwindsTransientError("timeout"), full=True)
    assert samples(m)["cost_sync_hostwinds_key_refused"] == 0
    try:
        try:
            raise HostwindsAuthError("refused")
        except HostwindsAuthError as inner:
            raise RuntimeError("the run failed") from inner
    except RuntimeError as outer:
        m.failed("schedule", outer, full=True)
    assert samples(m)["cost_sync_hostwinds_key_refused"] == 1
    m.observe("schedule", report(), full=True)
    assert samples(m)["cost_sync_hostwinds_key_refused"] == 0


async def test_oldest_held_change_age_is_measured_at_scrape_time_and_zero_when_none() -> None:
    """The age grows from the held change's ``since``; nothing held reads 0."""
    m = await metrics()
    assert samples(m)["cost_sync_changes_held_oldest_age_seconds"] == 0
    m.held_oldest.since = datetime.now(UTC) - timedelta(days=2)
    assert 2 * 86400 <= samples(m)["cost_sync_changes_held_oldest_age_seconds"] < 2 * 86400 + 60


async def test_progress_follows_the_run_in_flight_and_reads_zero_between_runs() -> None:
    """cost_sync_run_progress_{to_ask,asked,failed} read the current run's progress."""
    m = await metrics()
    current: list[RunRecord] = []
    m.follow(lambda: current[0] if current else None)
    assert samples(m)["cost_sync_run_progress_to_ask"] == 0
    record = RunRecord(run_id=uuid.uuid4(), trigger="schedule", instances=None)
    record.progress.to_ask = 40
    record.progress.tick()
    record.progress.tick(failed=True)
    current.append(record)
    got = samples(m)
    assert (got["cost_sync_run_progress_to_ask"], got["cost_sync_run_progress_asked"]) == (40, 2)
    assert got["cost_sync_run_progress_failed"] == 1
