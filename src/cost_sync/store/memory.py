"""In-memory doubles of the store's ports: :class:`MemoryStore` (a
:class:`~cost_sync.store.protocols.RunStore`) and :class:`MemoryTrustStore` (a
:class:`~cost_sync.store.protocols.TrustStoreProtocol` over a MemoryStore), for tests.

They keep the real stores' guarantees that a run relies on: only rows in scope whose value differs
from the one the run read are updated, with one history entry each; the changes and the ledger row
are applied together or not at all; observations and price lists are kept apart from that; one run
holds the lock at a time, and a scheduled fire a whole-fleet run took the lock after is served.
``tests/contract`` holds them to the real stores' observable behaviour. Not modelled: the lease's
expiry, takeover and fencing (a run that dies is not abandoned), tenant tables (attribution sees
every VPS unallocated) and the row columns cost-sync does not write (region, monthly_cost).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from cost_sync.domain import attribution
from cost_sync.domain.explain import HistoryRecord
from cost_sync.domain.guard import Reference
from cost_sync.domain.matching import RowIdentity, RowIndex
from cost_sync.domain.models import Estimate, HeldChange, Observation, RowOutcome, RowState, RunReport, VpsRow
from cost_sync.domain.redact import stored_text
from cost_sync.domain.reporting import Change, HeldRow, LastFleetRun, ReportRow, TenantDay
from cost_sync.errors import LockTimeout
from cost_sync.settings import Settings
from cost_sync.store.db import Conn
from cost_sync.store.postgres import price_list_from_json, price_list_to_json, run_served
from cost_sync.store.protocols import (
    CachedObservation,
    CachedPriceList,
    LastRun,
    RowView,
    RunStore,
    TrustStoreProtocol,
)

__all__ = ["HeldEntry", "HistoryEntry", "MemoryStore", "MemoryTrustStore"]

#: How often a run waiting for the lock asks again.
_LOCK_POLL_SECONDS = 0.01


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HistoryEntry:
    """One change, as ``cost_sync_history`` would hold it."""

    run_id: uuid.UUID
    row_id: uuid.UUID
    old: Decimal | None
    new: Decimal
    source: str
    #: The estimate the new value came from.
    estimate: Estimate | None = None
    #: When it was written (one time per transaction, as the database's ``now()``).
    at: datetime = field(default_factory=_now)
    approved: bool = False
    #: An approved change: the run that proposed it.
    proposed_by: uuid.UUID | None = None


@dataclass(frozen=True)
class HeldEntry:
    """One held change, as ``cost_sync_held_changes`` would hold it."""

    change: HeldChange
    run_id: uuid.UUID
    #: When a run first proposed this value.
    since: datetime


@dataclass
class MemoryStore:
    """Rows, observations, history and runs in memory; see the module docstring."""

    rows: dict[uuid.UUID, VpsRow] = field(default_factory=dict)
    observations: dict[int, Observation] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    runs: list[RunReport] = field(default_factory=list)
    held: dict[uuid.UUID, HeldEntry] = field(default_factory=dict)
    row_states: dict[uuid.UUID, RowState] = field(default_factory=dict)
    #: Cached price lists by (managed, drive_type or "", plan_key).
    price_lists: dict[tuple[bool, str, str], CachedPriceList] = field(default_factory=dict)
    #: How many times observations were saved (one per batch).
    saves: int = 0
    #: The runs after which a tenant attribution snapshot was written.
    attributions: list[uuid.UUID] = field(default_factory=list)
    #: Raised by :meth:`write_attribution` when set (the snapshot's tables missing, say).
    attribution_fault: Exception | None = None
    #: The ledger's 'running' runs (begun, not yet recorded): the instances each was asked for.
    running: dict[uuid.UUID, list[str] | None] = field(default_factory=dict)
    #: When each run in the ledger took the lock (the lease's ``lease_taken``).
    lease_taken: dict[uuid.UUID, datetime] = field(default_factory=dict)
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
        """Hold the run lock; wait up to ``timeout`` seconds, then raise LockTimeout.

        With ``served_since``, raise RunServed instead once a whole-fleet run took the lock at or
        after that time, as the real store does (asked again while waiting).
        """
        run_id = run_id or uuid.uuid4()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            served = None if served_since is None else self._served_by(served_since, run_id)
            if served is not None and served_since is not None:
                raise run_served(served, served_since)
            if not self._lock.locked():
                await self._lock.acquire()  # free: returns at once
                break
            if loop.time() >= deadline:
                raise LockTimeout(f"another run is in progress (waited {timeout:g} s for it to finish)")
            await asyncio.sleep(_LOCK_POLL_SECONDS)
        if run_id in self.running or any(r.run_id == run_id for r in self.runs):
            self.lease_taken.setdefault(run_id, _now())
        try:
            yield
        finally:
            self._lock.release()

    def _served_by(self, since: datetime, run_id: uuid.UUID) -> uuid.UUID | None:
        """The first whole-fleet run other than ``run_id`` that took the lock at or after ``since``."""
        whole = {r.run_id for r in self.runs if not r.instances}
        whole |= {i for i, instances in self.running.items() if not instances}
        taken = sorted(
            (at, i) for i, at in self.lease_taken.items() if i in whole and i != run_id and at >= since
        )
        return taken[0][1] if taken else None

    async def begin_run(
        self, run_id: uuid.UUID, trigger: str, started: datetime, instances: Sequence[str] | None
    ) -> None:
        """Put the run in the ledger as running (``running``); ``runs`` keeps it once it ends."""
        self.running[run_id] = list(instances) if instances else None

    async def discard_run(self, run_id: uuid.UUID) -> None:
        """Take a run that has not ended out of the ledger."""
        if run_id in self.running:
            del self.running[run_id]
            self.lease_taken.pop(run_id, None)

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
        """Keep a price list as the cache stores it (cells made cacheable, names redacted); an
        older one never replaces a newer one."""
        key = (cached.managed, cached.drive_type or "", cached.plan_key)
        kept = self.price_lists.get(key)
        if kept is None or kept.observed_at <= cached.observed_at or kept.observed_at > _now():
            self.price_lists[key] = replace(
                cached, plans=price_list_from_json(price_list_to_json(cached.plans))
            )

    async def price_references(
        self, row_ids: Sequence[uuid.UUID], *, window_seconds: float
    ) -> dict[uuid.UUID, Reference]:
        """What the history says of these rows (rows without history are left out)."""
        start = _now() - timedelta(seconds=window_seconds)
        references: dict[uuid.UUID, Reference] = {}
        for row_id in set(row_ids):
            entries = [e for e in self.history if e.row_id == row_id]
            if not entries:
                continue
            approved = [e.new for e in entries if e.approved and e.at > start]
            before = [e.new for e in entries if e.at <= start]
            standing = (
                before[-1] if before else entries[0].old if entries[0].old is not None else entries[0].new
            )
            references[row_id] = Reference(
                last_written=entries[-1].new,
                anchor=approved[-1] if approved else standing,
                anchor_approved=bool(approved),
            )
        return references

    async def last_good_run(self) -> LastRun | None:
        """The last successful whole-fleet run, if any, in the order runs were recorded."""
        good = [
            r
            for r in self.runs
            if r.outcome == "succeeded" and r.instances is None and r.trigger != "approve"
        ]
        if not good:
            return None
        last = good[-1]
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
        now = _now()
        rows = dict(self.rows)
        history = list(self.history)
        proposed = {h.row_id: h for h in held}
        kept = {i: e for i, e in self.held.items() if i not in decided or i in proposed}
        for change in held:
            before = kept.get(change.row_id)
            if before is not None and before.change.proposed.monthly == change.proposed.monthly:
                kept[change.row_id] = HeldEntry(change, before.run_id, before.since)
            else:
                kept[change.row_id] = HeldEntry(change, run_id, now)
        states = dict(self.row_states)
        states.update({s.row_id: s for s in row_states})
        for outcome in outcomes:
            # Only a value that differs from the one the run read is sent (RowOutcome.changed).
            if outcome.row.id in proposed or not outcome.changed:
                continue
            current = rows.get(outcome.row.id)
            result = outcome.result
            if current is None or current.status not in statuses or not isinstance(result, Estimate):
                continue
            if current.approximate_cost == result.monthly:
                continue
            rows[current.id] = replace(current, approximate_cost=result.monthly)
            history.append(
                HistoryEntry(
                    run_id,
                    current.id,
                    current.approximate_cost,
                    result.monthly,
                    result.source.value,
                    result,
                    now,
                )
            )
        report = finish(len(history) - len(self.history))
        self.rows, self.history = rows, history
        self.held, self.row_states = kept, states
        self._record(report)
        return report

    def _record(self, report: RunReport) -> None:
        """Keep a ledger row; a run already in the ledger keeps the row it has."""
        if all(r.run_id != report.run_id for r in self.runs):
            self.running.pop(report.run_id, None)
            self.runs.append(report)

    async def record_run(self, report: RunReport) -> None:
        """Keep a ledger row."""
        self._record(report)

    async def write_attribution(self, settings: Settings, run_id: uuid.UUID) -> int:
        """Note the snapshot (or raise ``attribution_fault``); return its lines. There are no
        tenant tables in memory: every VPS in scope is unallocated."""
        if self.attribution_fault is not None:
            raise self.attribution_fault
        self.attributions.append(run_id)
        vps = [
            _attribution_vps(row, self._last_written(row.id), self.row_states.get(row.id))
            for row in self.rows.values()
            if row.status in settings.sync.statuses
        ]
        allocation = attribution.allocate_rows(vps, {}, settings.attribution.idle_ip_statuses)
        return len(attribution.snapshot_lines(allocation))

    def _last_written(self, row_id: uuid.UUID) -> Decimal | None:
        return next((e.new for e in reversed(self.history) if e.row_id == row_id), None)


def _attribution_vps(row: VpsRow, last_written: Decimal | None, state: RowState | None) -> attribution.Vps:
    why = attribution.why_unpriced(
        row.approximate_cost, last_written, state.unpriced_reason if state is not None else None
    )
    return attribution.Vps(
        id=str(row.id),
        hostwinds_instance_id=row.hostwinds_instance_id,
        status=row.status or "",
        approximate_cost=row.approximate_cost,
        unpriced=why is not None,
        why=why,
    )


@dataclass
class MemoryTrustStore:
    """What ``explain``, ``held``, ``approve`` and ``report`` read (and approve writes) of a MemoryStore."""

    store: MemoryStore

    async def identities(self) -> RowIndex:
        """Every row as an ID argument can name it, with the instance it matched at the last run."""
        states = self.store.row_states
        return RowIndex(
            RowIdentity(
                r.id,
                r.hostwinds_instance_id,
                r.status,
                states[r.id].serviceid if r.id in states else None,
                _lower(states[r.id].server_uuid) if r.id in states else None,
            )
            for r in sorted(self.store.rows.values(), key=lambda r: r.id)
        )

    async def row(self, row_id: uuid.UUID) -> RowView | None:
        """The row, if it exists (no region or monthly_cost in memory)."""
        r = self.store.rows.get(row_id)
        if r is None:
            return None
        return RowView(r.id, r.hostwinds_instance_id, r.status, None, r.approximate_cost, None)

    async def history(self, row_id: uuid.UUID) -> list[HistoryRecord]:
        """The row's history, newest first."""
        entries = [e for e in self.store.history if e.row_id == row_id]
        return [_record(e) for e in sorted(reversed(entries), key=lambda e: (-e.at.timestamp(), e.run_id))]

    async def row_state(self, row_id: uuid.UUID) -> RowState | None:
        """What the last run that decided the row saw of it."""
        return self.store.row_states.get(row_id)

    async def observation(self, serviceid: int) -> CachedObservation | None:
        """The cached cycle prices of one service."""
        o = self.store.observations.get(serviceid)
        if o is None:
            return None
        return CachedObservation(dict(o.prices), o.fingerprint, o.observed_at, o.run_id)

    async def price_list(
        self, managed: bool, drive_type: str | None, plan_key: str
    ) -> CachedPriceList | None:
        """The cached price list a run read with these options, if any."""
        kept = self.store.price_lists.get((managed, drive_type or "", plan_key))
        return None if kept is None else replace(kept, drive_type=drive_type)

    async def held(self, row_ids: Sequence[uuid.UUID] | None = None) -> list[HeldRow]:
        """Held changes (None: all), oldest first."""
        entries = [e for i, e in self.store.held.items() if row_ids is None or i in row_ids]
        return [
            HeldRow(
                row_id=e.change.row_id,
                hostwinds_instance_id=e.change.hostwinds_instance_id,
                old=e.change.old,
                proposed=e.change.proposed.monthly,
                ratio=e.change.ratio,
                reason=e.change.reason,
                since=e.since,
                run_id=e.run_id,
                source=e.change.proposed.source.value,
            )
            for e in sorted(entries, key=lambda e: (e.since, e.change.row_id))
        ]

    async def report_rows(self, statuses: Sequence[str]) -> list[ReportRow]:
        """Every row in scope with its latest basis and kept state."""
        report = []
        for r in sorted(self.store.rows.values(), key=lambda r: r.id):
            if r.status not in statuses:
                continue
            latest = next((e for e in reversed(self.store.history) if e.row_id == r.id), None)
            est = latest.estimate if latest is not None else None
            state = self.store.row_states.get(r.id)
            observed = self.store.observations.get(state.serviceid) if state and state.serviceid else None
            report.append(
                ReportRow(
                    row_id=r.id,
                    hostwinds_instance_id=r.hostwinds_instance_id,
                    status=r.status,
                    region=None,
                    approximate_cost=r.approximate_cost,
                    monthly_cost=None,
                    source=latest.source if latest is not None else None,
                    cycle=est.cycle.value if est and est.cycle else None,
                    product_id=est.product_id if est else None,
                    product_name=stored_text(est.product_name) if est else None,
                    unpriced_reason=state.unpriced_reason if state else None,
                    unpriced_detail=state.unpriced_detail if state else None,
                    upgrade_available=state.upgrade_available if state else False,
                    provisional=bool(
                        latest is not None
                        and est is not None
                        and est.provisional
                        and not (observed is not None and observed.observed_at >= latest.at)
                    ),
                )
            )
        return report

    async def oldest_observation(self) -> datetime | None:
        """When the oldest cached observation was made."""
        return min((o.observed_at for o in self.store.observations.values()), default=None)

    async def last_fleet_run(self) -> LastFleetRun | None:
        """The last successful whole-fleet sync and what it flagged; None before the first."""
        last = await self.store.last_good_run()
        if last is None:
            return None
        report = next(r for r in self.store.runs if r.run_id == last.run_id)
        return LastFleetRun(report.run_id, report.trigger, report.finished_at, tuple(report.warnings))

    async def history_since(self, statuses: Sequence[str], since: datetime) -> list[Change]:
        """Every change to a row in scope since ``since``, oldest first."""
        triggers = {r.run_id: r.trigger for r in self.store.runs}
        rows = self.store.rows
        changes = [
            Change(
                run_id=e.run_id,
                row_id=e.row_id,
                hostwinds_instance_id=rows[e.row_id].hostwinds_instance_id,
                old=e.old,
                new=e.new,
                at=e.at,
                trigger=triggers.get(e.run_id),
                approved=e.approved,
            )
            for e in self.store.history
            if e.row_id in rows and rows[e.row_id].status in statuses and e.at >= since
        ]
        return sorted(changes, key=lambda c: (c.at, c.run_id, c.row_id))

    async def tenant_days(self, since: date) -> list[TenantDay]:
        """No tenant attribution is kept in memory."""
        return []

    async def fleet_total(self, statuses: Sequence[str]) -> Decimal:
        """The sum of the stored values of the rows in scope."""
        return sum(
            (
                r.approximate_cost
                for r in self.store.rows.values()
                if r.status in statuses and r.approximate_cost
            ),
            Decimal(0),
        )

    async def held_summary(self) -> tuple[int, datetime | None]:
        """How many changes are held, and since when the oldest waits (None: none held)."""
        return len(self.store.held), min((e.since for e in self.store.held.values()), default=None)

    async def approve(
        self,
        run_id: uuid.UUID,
        shown: Sequence[tuple[uuid.UUID, uuid.UUID, Decimal]],
        *,
        statuses: Sequence[str],
        report: RunReport,
        lock_timeout: float | None = None,
        fence: Callable[[Conn], Awaitable[None]] | None = None,
    ) -> list[uuid.UUID]:
        """Apply the held changes as they were shown, where the row still holds the value each was
        proposed against, and keep the ledger row; return the applied rows (``fence``: no lease
        in memory, not called)."""
        store, now = self.store, _now()
        applied: list[uuid.UUID] = []
        for row_id, proposing_run, value in shown:
            entry = store.held.get(row_id)
            row = store.rows.get(row_id)
            if entry is None or row is None or entry.run_id != proposing_run:
                continue
            change = entry.change
            if (
                change.proposed.monthly != value
                or row.approximate_cost != change.old
                or row.status not in statuses
            ):
                continue
            store.rows[row_id] = replace(row, approximate_cost=change.proposed.monthly)
            del store.held[row_id]
            store.history.append(
                HistoryEntry(
                    run_id,
                    row_id,
                    change.old,
                    change.proposed.monthly,
                    change.proposed.source.value,
                    # A held change keeps no fallback or provisional mark: its approval has none.
                    replace(change.proposed, fallback=None, provisional=False),
                    now,
                    approved=True,
                    proposed_by=proposing_run,
                )
            )
            applied.append(row_id)
        store._record(report.model_copy(update={"updated": len(applied)}))
        return applied


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def _record(e: HistoryEntry) -> HistoryRecord:
    est = e.estimate
    return HistoryRecord(
        run_id=e.run_id,
        at=e.at,
        old=e.old,
        new=e.new,
        source=e.source,
        cycle=est.cycle.value if est and est.cycle else None,
        cycle_price=est.cycle_price if est else None,
        months=est.months if est else None,
        hourly_ceiling=est.hourly_ceiling if est else False,
        product_id=est.product_id if est else None,
        product_name=stored_text(est.product_name) if est else None,
        approved=e.approved,
        proposed_by=e.proposed_by,
        cycle_alias=est.cycle_alias if est else None,
        fallback=est.fallback.value if est and est.fallback else None,
        provisional=est.provisional if est else False,
    )


if TYPE_CHECKING:
    # mypy holds the doubles to the protocols they stand in for.
    _run_store: type[RunStore] = MemoryStore
    _trust_store: type[TrustStoreProtocol] = MemoryTrustStore
