"""The daemon's run queue: one run at a time, triggers that arrive meanwhile coalesced.

Targeted resyncs merge into one follow-up covering their union, whole-fleet triggers into
another, and the targeted one goes first. Finished runs are kept for ``GET /runs``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog

from cost_sync.domain.models import RunReport
from cost_sync.errors import (
    CostSyncError,
    RunServed,
)
from cost_sync.run.sync import Progress

log = structlog.get_logger("cost_sync.daemon")

#: Finished runs kept for ``GET /runs/{id}`` and ``GET /runs``.
RUNS_KEPT = 500
#: ``GET /runs`` page size when ``limit`` is not given.
RUNS_PAGE = 20


class RunState(StrEnum):
    """Where a requested run is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: A scheduled (or takeover) run another replica served: nothing was run or recorded.
    SKIPPED = "skipped"


@dataclass
class RunRecord:
    """One run as the daemon tracks it: what was asked, where it is, how it ended."""

    run_id: uuid.UUID
    trigger: str
    instances: list[str] | None
    #: Ask every service of the run afresh instead of using cached prices.
    full: bool = False
    #: Apply changes over [guard] max_change_ratio instead of holding them (named resyncs do).
    accept_changes: bool = False
    #: A scheduled fire's time: not run when a whole-fleet run took the lease since (a replica's).
    served_since: datetime | None = None
    state: RunState = RunState.QUEUED
    requests: int = 1
    report: RunReport | None = None
    error: str | None = None
    progress: Progress = field(default_factory=Progress, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def merge(self, instances: list[str] | None, *, full: bool, accept_changes: bool = False) -> None:
        """Widen this queued run to also cover ``instances`` (None: the whole fleet)."""
        self.requests += 1
        # Asked for by more than one trigger: run it whatever another replica served.
        self.served_since = None
        self.full = self.full or full
        self.accept_changes = self.accept_changes or accept_changes
        if self.instances is None or instances is None:
            self.instances = None
        else:
            self.instances += [i for i in instances if i not in self.instances]

    def as_json(self) -> dict[str, Any]:
        """The record for ``GET /runs/{id}``."""
        return {
            "run_id": str(self.run_id),
            "trigger": self.trigger,
            "state": self.state.value,
            "instances": self.instances,
            "requests": self.requests,
            "full": self.full,
            "progress": self.progress.as_json() if self.state is RunState.RUNNING else None,
            "error": self.error,
            "report": self.report.model_dump(mode="json") if self.report else None,
        }


Execute = Callable[[RunRecord], Awaitable[RunReport]]


class Runner:
    """Runs one sync at a time; coalesces triggers into a targeted and a whole-fleet follow-up."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute
        self._targeted: RunRecord | None = None
        self._fleet: RunRecord | None = None
        self._current: RunRecord | None = None
        self._driver: asyncio.Task[None] | None = None
        self._closed = False
        self.runs: OrderedDict[uuid.UUID, RunRecord] = OrderedDict()

    @property
    def busy(self) -> bool:
        """True while a run is in flight or queued."""
        return self._current is not None or self._targeted is not None or self._fleet is not None

    @property
    def current(self) -> RunRecord | None:
        """The run in flight, if any."""
        return self._current

    def request(
        self,
        instances: list[str] | None,
        trigger: str,
        *,
        full: bool = False,
        accept_changes: bool = False,
        served_since: datetime | None = None,
    ) -> RunRecord:
        """Queue a run (or widen the queued one of its kind); return the record that will carry it out."""
        if self._closed:
            raise CostSyncError("the daemon is shutting down")
        queued = self._fleet if instances is None else self._targeted
        if queued is None:
            queued = RunRecord(
                uuid.uuid4(),
                trigger,
                list(instances) if instances else None,
                full=full,
                accept_changes=accept_changes,
                served_since=served_since,
            )
            if instances is None:
                self._fleet = queued
            else:
                self._targeted = queued
            self._remember(queued)
        else:
            queued.merge(instances, full=full, accept_changes=accept_changes)
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name="cost-sync-runner")
        return queued

    def get(self, run_id: uuid.UUID) -> RunRecord | None:
        """A known run by id."""
        return self.runs.get(run_id)

    def newest(self, limit: int, before: uuid.UUID | None = None) -> tuple[list[RunRecord], bool]:
        """Up to ``limit`` known runs, newest first, older than ``before``; and whether more follow."""
        records: list[RunRecord] = []
        seen = before is None
        for record in reversed(self.runs.values()):
            if not seen:
                seen = record.run_id == before
                continue
            if len(records) == limit:
                return records, True
            records.append(record)
        return records, False

    def _remember(self, record: RunRecord) -> None:
        self.runs[record.run_id] = record
        while len(self.runs) > RUNS_KEPT:
            self.runs.popitem(last=False)

    def _next(self) -> RunRecord | None:
        # Targeted resyncs first: ops asked for those prices and are waiting for them.
        record: RunRecord | None
        if self._targeted is not None:
            record, self._targeted = self._targeted, None
        else:
            record, self._fleet = self._fleet, None
        return record

    async def _drive(self) -> None:
        while (record := self._next()) is not None:
            self._current = record
            record.state = RunState.RUNNING
            try:
                record.report = await self._execute(record)
                record.state = RunState.SUCCEEDED
            except asyncio.CancelledError:
                record.state, record.error = RunState.FAILED, "cancelled at shutdown; nothing was written"
                raise
            except RunServed as exc:
                record.state, record.error = RunState.SKIPPED, str(exc)
                log.info("sync.served_elsewhere", run_id=str(record.run_id), served_by=exc.served_by)
            except CostSyncError as exc:
                record.state, record.error = RunState.FAILED, str(exc)
                log.error("sync.failed", run_id=str(record.run_id), trigger=record.trigger, error=str(exc))
            except Exception as exc:  # a bug must not stop the daemon: log it, fail the run
                log.exception("daemon.run_crashed", run_id=str(record.run_id))
                record.state, record.error = RunState.FAILED, f"internal error: {type(exc).__name__}"
            finally:
                self._current = None
                record.done.set()
            self._catch_up(record)

    def _catch_up(self, record: RunRecord) -> None:
        """After a whole-fleet run that left rows pending and made progress, queue the next one now."""
        report = record.report
        if self._closed or report is None or record.instances is not None:
            return
        cache = report.price_cache
        if cache.pending and cache.asked:
            log.info("daemon.catch_up", pending=cache.pending, after_run=str(record.run_id))
            self.request(None, "catchup")

    async def close(self, grace: float) -> bool:
        """Refuse new runs, drop the queued ones, give the in-flight run ``grace`` s; True if it finished."""
        self._closed = True
        for queued in (self._targeted, self._fleet):
            if queued is not None:
                queued.state, queued.error = RunState.FAILED, "not started: the daemon stopped"
                queued.done.set()
        self._targeted = self._fleet = None
        if self._driver is None or self._driver.done():
            return True
        done, _ = await asyncio.wait({self._driver}, timeout=grace)
        if done:
            return True
        self._driver.cancel()
        await asyncio.gather(self._driver, return_exceptions=True)
        return False
