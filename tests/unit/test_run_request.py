"""What a caller asks of a run: the named cases and the one rule for named resyncs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cost_sync.run.request import ONCE, RunRequest


def test_a_resync_naming_instances_is_full_and_applies_its_changes() -> None:
    named = RunRequest.resync(["1234567"])
    assert (named.trigger, named.targets, named.full, named.accept_changes) == (
        "resync",
        ("1234567",),
        True,
        True,
    )
    assert named.strict_targets


def test_a_whole_fleet_resync_is_full_or_accepting_only_as_asked() -> None:
    plain = RunRequest.resync(None)
    assert (plain.targets, plain.full, plain.accept_changes) == (None, False, False)
    asked = RunRequest.resync(None, full=True, accept_changes=True)
    assert (asked.full, asked.accept_changes) == (True, True)


def test_targets_are_kept_as_a_tuple_and_none_name_the_whole_fleet() -> None:
    chosen = ["1", "2"]
    request = RunRequest(targets=chosen)
    chosen.append("3")
    assert request.targets == ("1", "2")
    assert RunRequest(targets=[]).targets is None


def test_a_plain_once_run_is_the_whole_fleet_holding_large_changes() -> None:
    assert RunRequest(trigger="once") == ONCE
    assert (ONCE.targets, ONCE.dry_run, ONCE.full, ONCE.accept_changes, ONCE.strict_targets) == (
        None,
        False,
        False,
        False,
        True,
    )


def test_approves_recheck_writes_nothing_and_reports_rows_gone_rather_than_failing() -> None:
    rows, run_id = [uuid.uuid4(), uuid.uuid4()], uuid.uuid4()
    recheck = RunRequest.recheck(rows, run_id=run_id)
    assert recheck.trigger == "approve"
    assert recheck.targets == tuple(str(r) for r in rows)
    assert (recheck.dry_run, recheck.accept_changes, recheck.strict_targets) == (True, True, False)
    assert recheck.run_id == run_id


def test_a_daemon_run_reports_unknown_targets_instead_of_refusing_them() -> None:
    fired = datetime(2026, 11, 1, tzinfo=UTC)
    queued = RunRequest.queued(
        "schedule",
        None,
        run_id=uuid.uuid4(),
        full=False,
        accept_changes=False,
        lease_wait=120.0,
        served_since=fired,
    )
    assert not queued.strict_targets
    assert (queued.lease_wait, queued.served_since) == (120.0, fired)
