"""The store's two ports and the records they hand back: :class:`RunStore`, what a sync run needs of
a database, and :class:`TrustStoreProtocol`, what ``explain``, ``held``, ``approve`` and ``report`` need.

:class:`~cost_sync.store.postgres.Store` and :class:`~cost_sync.store.trust.TrustStore` are the
real ones, :class:`~cost_sync.store.memory.MemoryStore` and
:class:`~cost_sync.store.memory.MemoryTrustStore` the in-memory doubles; one contract suite
(``tests/contract``) holds each pair to the same observable behaviour.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from cost_sync.domain.explain import HistoryRecord
from cost_sync.domain.guard import Reference
from cost_sync.domain.matching import RowIndex
from cost_sync.domain.models import (
    Cycle,
    HeldChange,
    Observation,
    Plan,
    RowOutcome,
    RowState,
    RunReport,
    VpsRow,
)
from cost_sync.domain.reporting import Change, HeldRow, LastFleetRun, ReportRow, TenantDay
from cost_sync.settings import Settings

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from cost_sync.store.db import Conn

__all__ = [
    "CachedObservation",
    "CachedPriceList",
    "LastRun",
    "RowView",
    "RunStore",
    "TrustStoreProtocol",
]


@dataclass(frozen=True, slots=True)
class LastRun:
    """The last successful whole-fleet run, as the guards compare with it."""

    run_id: uuid.UUID
    finished: datetime
    plans_in_use: list[int] | None

    def describe(self) -> str:
        """``run <id> at <time>`` for a message."""
        return f"run {self.run_id} at {self.finished.isoformat(timespec='seconds')}"


@dataclass(frozen=True, slots=True)
class CachedPriceList:
    """One get_price_list answer as the cache keeps it: the plans by their join key, when, which run."""

    managed: bool
    drive_type: str | None
    plan_key: str
    plans: Mapping[int, Plan]
    observed_at: datetime
    run_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class RowView:
    """One ``vps_instances`` row as explain shows it."""

    row_id: uuid.UUID
    hostwinds_instance_id: str | None
    status: str | None
    region: str | None
    approximate_cost: Decimal | None
    monthly_cost: Decimal | None


@dataclass(frozen=True, slots=True)
class CachedObservation:
    """A cached ``get_billingcycle_prices`` answer as explain uses it."""

    prices: dict[Cycle, str]
    fingerprint: str
    observed: datetime
    run_id: uuid.UUID


class RunStore(Protocol):
    """What a sync run needs of a database; :class:`~cost_sync.store.postgres.Store` is the real one."""

    def lock(
        self,
        *,
        timeout: float,
        run_id: uuid.UUID | None = None,
        served_since: datetime | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold the run lease; wait up to ``timeout`` seconds, then raise LockTimeout.

        With ``served_since``, raise RunServed instead once a whole-fleet run took the lease at or
        after that time (a scheduled fire another replica served).
        """
        ...

    async def begin_run(
        self, run_id: uuid.UUID, trigger: str, started: datetime, instances: Sequence[str] | None
    ) -> None:
        """Put the run in the ledger as 'running', before it waits for the lease."""
        ...

    async def discard_run(self, run_id: uuid.UUID) -> None:
        """Take a run that did nothing a ledger keeps (bad arguments, a served fire) out of it."""
        ...

    async def read_rows(self, statuses: Sequence[str]) -> list[VpsRow]:
        """Every ``vps_instances`` row whose status is in scope, with what the last run saw of it."""
        ...

    async def read_identities(self) -> list[tuple[uuid.UUID, str | None, str | None]]:
        """(id, hostwinds_instance_id, status) of every row."""
        ...

    async def read_observations(self, serviceids: Sequence[int]) -> dict[int, Observation]:
        """The cached observations of these services."""
        ...

    async def save_observations(self, observations: Sequence[Observation]) -> None:
        """Commit a batch of observations now, apart from any run transaction."""
        ...

    async def save_price_list(self, cached: CachedPriceList) -> None:
        """Commit one price list now, apart from any run transaction."""
        ...

    async def last_good_run(self) -> LastRun | None:
        """The last successful whole-fleet run, if any."""
        ...

    async def price_references(
        self, row_ids: Sequence[uuid.UUID], *, window_seconds: float
    ) -> dict[uuid.UUID, Reference]:
        """What cost-sync's history says of these rows (rows without history are left out)."""
        ...

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
        """Write the changed estimates and the ledger row ``finish(updated)`` in one transaction.

        ``held`` changes are stored as held (not applied); any other held change of a row in
        ``decided`` is cleared; ``row_states`` replace the rows' kept states.
        """
        ...

    async def record_run(self, report: RunReport) -> None:
        """Write one ledger row on its own (a failed run's)."""
        ...

    async def write_attribution(self, settings: Settings, run_id: uuid.UUID) -> int:
        """After a committed run: replace the tenant attribution snapshot; return rows written."""
        ...


class TrustStoreProtocol(Protocol):
    """What ``explain``, ``held``, ``approve`` and ``report`` read (and approve writes);
    :class:`~cost_sync.store.trust.TrustStore` is the real one."""

    async def identities(self) -> RowIndex:
        """Every row as an ID argument can name it, with the instance it matched at the last run."""
        ...

    async def row(self, row_id: uuid.UUID) -> RowView | None:
        """The row, if it exists."""
        ...

    async def history(self, row_id: uuid.UUID) -> list[HistoryRecord]:
        """The row's history, newest first."""
        ...

    async def row_state(self, row_id: uuid.UUID) -> RowState | None:
        """What the last run that decided the row saw of it."""
        ...

    async def observation(self, serviceid: int) -> CachedObservation | None:
        """The cached cycle prices of one service."""
        ...

    async def price_list(
        self, managed: bool, drive_type: str | None, plan_key: str
    ) -> CachedPriceList | None:
        """The cached price list a run read with these options, if any."""
        ...

    async def held(self, row_ids: Sequence[uuid.UUID] | None = None) -> list[HeldRow]:
        """Held changes (None: all), oldest first."""
        ...

    async def report_rows(self, statuses: Sequence[str]) -> list[ReportRow]:
        """Every row in scope with its latest basis and kept state."""
        ...

    async def oldest_observation(self) -> datetime | None:
        """When the oldest cached observation was made."""
        ...

    async def last_fleet_run(self) -> LastFleetRun | None:
        """The last successful whole-fleet sync and what it flagged; None before the first."""
        ...

    async def history_since(self, statuses: Sequence[str], since: datetime) -> list[Change]:
        """Every change to a row in scope since ``since``, oldest first."""
        ...

    async def tenant_days(self, since: date) -> list[TenantDay]:
        """The per-day tenant attribution kept since ``since``."""
        ...

    async def fleet_total(self, statuses: Sequence[str]) -> Decimal:
        """The sum of the stored values of the rows in scope."""
        ...

    async def held_summary(self) -> tuple[int, datetime | None]:
        """How many changes are held, and since when the oldest waits (None: none held)."""
        ...

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
        """Apply these held changes and write the ledger row together; return the applied rows."""
        ...
