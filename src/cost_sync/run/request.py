"""What a caller asks of one run: which rows, how, and under what name; not what it runs with.

The client, the store, the settings, the progress and the clocks are the run's means and are
passed beside a :class:`RunRequest`. The named constructors are the cases the callers have; the
rule that a resync naming instances is a full run whose changes are applied is :meth:`resync`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ONCE", "RunRequest"]


@dataclass(frozen=True)
class RunRequest:
    """One run as asked for; ``RunRequest()`` is a plain ``cost-sync --once``."""

    #: Who asked (``once``, ``resync``, ``schedule``, ...): the ledger's and the metrics' label.
    trigger: str = "once"
    #: The rows to sync (an id, ``hostwinds_instance_id``, serviceid or server_uuid each);
    #: None (or empty): the whole fleet.
    targets: Sequence[str] | None = None
    #: Compute everything, write nothing (no lease, no ledger row, no cached answer).
    dry_run: bool = False
    #: Ask every service of the run afresh, cached prices or not.
    full: bool = False
    #: Apply every change without holding it, and skip the vanished-rows checks.
    accept_changes: bool = False
    #: A target naming no row in scope is a ConfigError; else it is only reported (coalesced triggers).
    strict_targets: bool = True
    #: The run's id (None: a new one).
    run_id: uuid.UUID | None = None
    #: How long the run waits for the run lease (None: ``database.lock_timeout_seconds``).
    lease_wait: float | None = None
    #: A scheduled fire's time: the run does not run when a whole-fleet run took the lease since.
    served_since: datetime | None = None

    def __post_init__(self) -> None:
        # A tuple: a frozen request is not changed through a list its caller keeps.
        object.__setattr__(self, "targets", tuple(self.targets) if self.targets else None)

    @classmethod
    def resync(
        cls, targets: Sequence[str] | None, *, full: bool = False, accept_changes: bool = False
    ) -> RunRequest:
        """``resync``: named instances are asked afresh (the after-upgrade case) and their new price
        is applied however large the change (ops named them to get it); a whole-fleet resync
        (``targets`` None) is full or accepting only as asked."""
        named = targets is not None
        return cls(
            trigger="resync",
            targets=targets,
            full=full or named,
            accept_changes=accept_changes or named,
        )

    @classmethod
    def recheck(cls, row_ids: Sequence[uuid.UUID], *, run_id: uuid.UUID) -> RunRequest:
        """``approve``'s re-check of held rows: priced again without writing, every change
        accepted, a row gone since reported rather than refused."""
        return cls(
            trigger="approve",
            targets=[str(row_id) for row_id in row_ids],
            dry_run=True,
            accept_changes=True,
            strict_targets=False,
            run_id=run_id,
        )

    @classmethod
    def queued(
        cls,
        trigger: str,
        targets: Sequence[str] | None,
        *,
        run_id: uuid.UUID,
        full: bool,
        accept_changes: bool,
        lease_wait: float,
        served_since: datetime | None,
    ) -> RunRequest:
        """A daemon's run, which may carry several triggers' targets: one naming no row is reported
        in ``unknown_instances``, not refused, so that the others are synced."""
        return cls(
            trigger=trigger,
            targets=targets,
            full=full,
            accept_changes=accept_changes,
            strict_targets=False,
            run_id=run_id,
            lease_wait=lease_wait,
            served_since=served_since,
        )


#: A plain ``cost-sync --once``: the whole fleet, cached prices first, changes over the guard held.
ONCE = RunRequest()
