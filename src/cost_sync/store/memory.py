"""An in-memory :class:`~cost_sync.store.postgres.RunStore`: the run's database as dicts, for tests.

It keeps the real store's guarantees that a run relies on: only rows in scope whose value differs
are updated, with one history entry each; the changes and the ledger row are applied together or
not at all; observations are kept apart from that; one run holds the lock at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from cost_sync.domain.guard import Reference
from cost_sync.domain.models import Estimate, HeldChange, Observation, RowOutcome, RowState, RunReport, VpsRow
from cost_sync.errors import LockTimeout
from cost_sync.settings import Settings
from cost_sync.store.postgres import CachedPriceList, LastRun

__all__ = ["HeldEntry", "HistoryEntry", "MemoryStore"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HistoryEntry:
    """One change, as ``cost_sync_history`` would hold it."""

    run_id: uuid.UUID
    row_id: uuid.UUID
    old: object
    new: object
    source: str


@dataclass(frozen=True)
class HeldEntry:
    """One held change, as ``cost_sync_held_changes`` would hold it."""

    change: HeldChange
    run_id: uuid.UUID
    since: object


@dataclass
class MemoryStore:
    """Rows, observations, history and runs in memory; see the module docstring."""

    rows: dict[uuid.UUID, VpsRow] = field(default_factory=dict)
    observations: dict[int, Observation] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    runs: list[RunReport] = field(default_factory=list)
    held: dict[uuid.UUID, HeldEntry] = field(default_factory=dict)
    row_states: dict[uuid.UUID, RowState] = field(default_factory=dict)
    #: Cached price lists by (managed, drive_type, plan_key).
    price_lists: dict[tuple[bool, str | None, str], CachedPriceList] = field(default_factory=dict)
    #: How many times observations were saved (one per batch).
    saves: int = 0
    #: The runs after which a tenant attribution snapshot was written.
    attributions: list[uuid.UUID] = field(default_factory=list)
    #: Raised by :meth:`write_attribution` when set (the snapshot's tables missing, say).
    attribution_fault: Exception | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def add_row(
        self, hostwinds_instance_id: str | None, status: str = "active", cost: object = None
    ) -> VpsRow:
        """Add a row; return it."""
        row = VpsRow(
            id=uuid.uuid4(),
            hostwinds_instance_id=hostwinds_instance_id,
            status=status,
            approximate_cost=None if cost is None else Decimal(str(cost)),
        )
        self.rows[row.id] = row
        return row

    def value(self, hostwinds_instance_id: str) -> object:
        """The stored value of the row with this ``hostwinds_instance_id``."""
        return next(
            r.approximate_cost for r in self.rows.values() if r.hostwinds_instance_id == hostwinds_instance_id
        )

    @asynccontextmanager
    async def lock(
        self,
        *,
        timeout: float,
        run_id: uuid.UUID | None = None,
        served_since: datetime | None = None,
    ) -> AsyncIterator[None]:
        """Hold the run lock; wait up to ``timeout`` seconds, then raise LockTimeout."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=timeout)
        except TimeoutError:
            raise LockTimeout(f"another run is in progress (waited {timeout:g} s for it to finish)") from None
        try:
            yield
        finally:
            self._lock.release()

    async def begin_run(
        self, run_id: uuid.UUID, trigger: str, started: datetime, instances: Sequence[str] | None
    ) -> None:
        """A run's ledger entry is kept when it ends (``runs``): nothing to do when it starts."""

    async def discard_run(self, run_id: uuid.UUID) -> None:
        """Nothing was kept of a run that has not ended."""

    async def read_rows(self, statuses: Sequence[str]) -> list[VpsRow]:
        """Every row whose status is in scope, by id."""
        return sorted(
            (
                replace(r, seen=self.row_states[r.id].key() if r.id in self.row_states else None)
                for r in self.rows.values()
                if r.status in statuses
            ),
            key=lambda r: r.id,
        )

    async def read_identities(self) -> list[tuple[uuid.UUID, str | None, str | None]]:
        """(id, hostwinds_instance_id, status) of every row."""
        return [(r.id, r.hostwinds_instance_id, r.status) for r in self.rows.values()]

    async def read_observations(self, serviceids: Sequence[int]) -> dict[int, Observation]:
        """The kept observations of these services."""
        return {sid: self.observations[sid] for sid in serviceids if sid in self.observations}

    async def save_observations(self, observations: Sequence[Observation]) -> None:
        """Keep a batch; an older observation never replaces a newer one."""
        self.saves += 1
        for observation in observations:
            kept = self.observations.get(observation.serviceid)
            if kept is None or kept.observed_at <= observation.observed_at or kept.observed_at > _now():
                self.observations[observation.serviceid] = observation

    async def save_price_list(self, cached: CachedPriceList) -> None:
        """Keep a price list; an older one never replaces a newer one."""
        key = (cached.managed, cached.drive_type, cached.plan_key)
        kept = self.price_lists.get(key)
        if kept is None or kept.observed_at <= cached.observed_at or kept.observed_at > _now():
            self.price_lists[key] = cached

    async def price_references(
        self, row_ids: Sequence[uuid.UUID], *, window_seconds: float
    ) -> dict[uuid.UUID, Reference]:
        """The last value written to each row (history here has no time or approvals: no anchor)."""
        wanted = set(row_ids)
        last: dict[uuid.UUID, Reference] = {}
        for entry in self.history:
            if entry.row_id in wanted and isinstance(entry.new, Decimal):
                last[entry.row_id] = Reference(last_written=entry.new)
        return last

    async def last_good_run(self) -> LastRun | None:
        """The last successful whole-fleet run, if any."""
        good = [
            r
            for r in self.runs
            if r.outcome == "succeeded" and r.instances is None and r.trigger != "approve"
        ]
        if not good:
            return None
        last = max(good, key=lambda r: r.started_at)
        return LastRun(last.run_id, last.finished_at, last.plans_in_use)

    async def commit_run(
        self,
        run_id: uuid.UUID,
        outcomes: Sequence[RowOutcome],
        *,
        statuses: Sequence[str],
        finish: Callable[[int], RunReport],
        held: Sequence[HeldChange] = (),
        decided: Sequence[uuid.UUID] = (),
        row_states: Sequence[RowState] = (),
    ) -> RunReport:
        """Apply the changed estimates, held changes, row states and the ledger row together."""
        rows = dict(self.rows)
        history = list(self.history)
        proposed = {h.row_id: h for h in held}
        kept = {i: e for i, e in self.held.items() if i not in decided or i in proposed}
        for change in held:
            before = kept.get(change.row_id)
            same = before is not None and before.change.proposed.monthly == change.proposed.monthly
            kept[change.row_id] = HeldEntry(
                change,
                before.run_id if same and before else run_id,
                before.since if same and before else run_id,
            )
        states = dict(self.row_states)
        states.update({s.row_id: s for s in row_states})
        for outcome in outcomes:
            if outcome.row.id in proposed:
                continue
            current = rows.get(outcome.row.id)
            result = outcome.result
            if current is None or current.status not in statuses or not isinstance(result, Estimate):
                continue
            if current.approximate_cost == result.monthly:
                continue
            rows[current.id] = replace(current, approximate_cost=result.monthly)
            history.append(
                HistoryEntry(run_id, current.id, current.approximate_cost, result.monthly, result.source)
            )
        report = finish(len(history) - len(self.history))
        self.rows, self.history = rows, history
        self.held, self.row_states = kept, states
        self.runs.append(report)
        return report

    async def record_run(self, report: RunReport) -> None:
        """Keep a ledger row."""
        self.runs.append(report)

    async def write_attribution(self, settings: Settings, run_id: uuid.UUID) -> int:
        """Note the snapshot (or raise ``attribution_fault``); there are no tenants in memory."""
        if self.attribution_fault is not None:
            raise self.attribution_fault
        self.attributions.append(run_id)
        return 0
