"""The run's database access: one :class:`Store` over an asyncpg pool, its queries in ``sql/queries/``.

Guarantees: a run's writes (changed values, their history rows, the run's ledger row) happen in one
transaction, in one statement each; only rows whose value differs are updated (``IS DISTINCT
FROM``), so a steady-state run writes nothing but its ledger row; a row whose status left the scope
during the run is not touched. Price observations are committed on their own, apart from that
transaction. Runs are exclusive across processes through the run lease (one row of
``cost_sync_lease``, taken and renewed in short transactions by the database's clock, so a pooler
in transaction mode cannot hand it to another client), and the final write checks under a row lock
that the lease is still the run's (fencing). Every database failure
leaves this module as a :class:`~cost_sync.errors.DatabaseError`; the store never opens or closes
the pool it is handed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING

import asyncpg
import structlog

from cost_sync.domain.guard import Reference
from cost_sync.domain.models import (
    Cycle,
    Estimate,
    HeldChange,
    Observation,
    Plan,
    RowOutcome,
    RowState,
    RunReport,
    VpsRow,
)
from cost_sync.domain.pricing import cacheable_cell
from cost_sync.domain.redact import redact
from cost_sync.errors import DatabaseError, LeaseLost, LockTimeout, RunServed
from cost_sync.settings import Settings
from cost_sync.store import attribution as attribution_store
from cost_sync.store.db import Conn, maps_errors
from cost_sync.store.protocols import CachedPriceList, LastRun, RunStore
from cost_sync.store.sqlfiles import queries

__all__ = [
    "Store",
    "holder_identity",
    "insert_run",
    "price_list_from_json",
    "price_list_to_json",
    "prices_from_json",
    "run_errors",
    "run_served",
    "write_transaction",
]

_log = structlog.get_logger("cost_sync.store")

#: How often a run waiting for the lease asks again.
_LOCK_POLL_SECONDS = 0.2
#: A 'running' ledger row that never got the lease and is older than this is a run whose process
#: died while it waited: the next run to take the lease marks it abandoned.
STALE_WAIT_SECONDS = 86400.0
#: Observations read per statement.
_OBSERVATION_CHUNK = 10_000
#: A cached plan name is cut to this many characters.
_PLAN_NAME_MAX = 200
#: How long recording a failed run may take: the database may be what failed.
_RECORD_TIMEOUT_SECONDS = 5.0

_CYCLES = {cycle.value: cycle for cycle in Cycle}
#: The columns of ``read_rows`` that hold what the last run saw of a row, as :meth:`RowState.key`.
_SEEN = RowState.KEY_FIELDS

#: Driver and network errors of the run's statements, as the run's DatabaseError (once per method).
run_errors = maps_errors("the run failed in PostgreSQL")


@asynccontextmanager
async def write_transaction(
    pool: asyncpg.Pool, *, lock_timeout: float | None, writer: str, undone: str
) -> AsyncIterator[Conn]:
    """A transaction on a connection of ``pool`` whose row locks are waited for ``lock_timeout``
    seconds at most (None: unbounded); a wait that gives up raises DatabaseError saying that
    ``writer`` gave up and nothing was ``undone``."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            if lock_timeout is not None:
                # PostgreSQL reads 0 as "no limit": the least bound is 1 ms.
                await conn.execute(queries("sync")["lock_timeout"], str(max(1, round(lock_timeout * 1000))))
            yield conn
    except asyncpg.LockNotAvailableError:
        if lock_timeout is None:
            raise
        raise DatabaseError(
            f"{writer} waited {lock_timeout:g} s for vps_instances rows locked by another transaction "
            f"and gave up; nothing was {undone} (database.lock_timeout_seconds)"
        ) from None


def run_served(served: uuid.UUID, served_since: datetime) -> RunServed:
    """Why a scheduled fire is not run: run ``served`` took the lease at or after it."""
    return RunServed(
        f"run {served} took the run lease at or after this scheduled fire "
        f"({served_since.isoformat(timespec='seconds')}): it serves the fire",
        served_by=str(served),
    )


def holder_identity() -> str:
    """``host:pid`` of this process, as the lease and the ledger name who runs a run."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class _Lease:
    """The lease a run holds: its run id and the token it got when it took the lease."""

    run_id: uuid.UUID
    token: int
    #: When the run took the lease (the database's clock).
    taken_at: datetime
    #: Why the heartbeat found the lease gone (None while it is held).
    lost: str | None = None


class Store:
    """The real :class:`RunStore`, on an asyncpg pool it does not own."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        write_lock_timeout: float | None = None,
        lease_seconds: float = 30.0,
        stale_wait_seconds: float = STALE_WAIT_SECONDS,
    ) -> None:
        self._pool = pool
        self._q = queries("sync")
        #: How long the write may wait for a row locked by another transaction (None: unbounded).
        self._write_lock_timeout = write_lock_timeout
        #: How long a taken or renewed lease lasts; renewed every third of it.
        self._lease_seconds = lease_seconds
        self._stale_wait_seconds = stale_wait_seconds
        #: The lease held while :meth:`lock` is entered.
        self._lease: _Lease | None = None

    @asynccontextmanager
    async def lock(
        self,
        *,
        timeout: float,
        run_id: uuid.UUID | None = None,
        served_since: datetime | None = None,
    ) -> AsyncIterator[None]:
        """Hold the run lease for the block's duration, renewed by a heartbeat.

        Waits up to ``timeout`` seconds (LockTimeout). Only the lease's own statements are mapped to
        DatabaseError: what the block raises passes through as it is.
        """
        run_id = run_id or uuid.uuid4()
        deadline = time.monotonic() + timeout
        while True:
            taken = await self._try_take(run_id, served_since)
            if taken is not None:
                break
            if time.monotonic() >= deadline:
                raise LockTimeout(f"another run is in progress (waited {timeout:g} s for it to finish)")
            await asyncio.sleep(_LOCK_POLL_SECONDS)
        lease = self._lease = _Lease(run_id, *taken)
        beat = asyncio.create_task(self._heartbeat(lease), name="cost-sync-lease")
        try:
            yield
        finally:
            self._lease = None
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            await self._release(lease)

    @run_errors
    async def _try_take(
        self, run_id: uuid.UUID, served_since: datetime | None
    ) -> tuple[int, datetime] | None:
        """In one short transaction: take the lease if it is free (its token and time), else None."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(self._q["lease_row"], run_id)
            if row is None:
                # The row went (a hand-made database): put it back, ask again next time.
                await conn.execute(self._q["lease_create"])
                return None
            if served_since is not None:
                age = (datetime.now(UTC) - served_since).total_seconds()
                served = await conn.fetchval(self._q["served_since"], age, run_id)
                if served is not None:
                    raise run_served(served, served_since)
            if not row["free"]:
                return None
            taken = await conn.fetchrow(self._q["lease_take"], run_id, holder_identity(), self._lease_seconds)
            assert taken is not None  # the row was read under FOR UPDATE above
            abandoned = await conn.fetch(
                self._q["abandon_runs"], row["holder_run"], run_id, self._stale_wait_seconds
            )
            await conn.execute(self._q["mark_taken"], run_id, taken["taken_at"])
        for record in abandoned:
            _log.warning(
                "store.run_abandoned",
                abandoned_run=str(record["id"]),
                previous_holder=row["holder"],
                note="its process stopped holding (or waiting for) the run lease; nothing of it was written",
            )
        return taken["token"], taken["taken_at"]

    async def _heartbeat(self, lease: _Lease) -> None:
        """Renew the lease every third of its duration; stop when it is found lost."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                renewed = await self._renew(lease)
            except DatabaseError as exc:
                # The next beat retries; the final write's fencing decides whether the run may commit.
                _log.warning("store.lease_not_renewed", error=str(exc))
                continue
            if renewed is None:
                lease.lost = "it expired before it was renewed, or another process took it over"
                _log.error("store.lease_lost", reason=lease.lost, note="the run's write will be refused")
                return

    @run_errors
    async def _renew(self, lease: _Lease) -> datetime | None:
        """Extend the lease; None: it was lost."""
        renewed: datetime | None = await self._pool.fetchval(
            self._q["lease_renew"], lease.run_id, lease.token, self._lease_seconds
        )
        return renewed

    @run_errors
    async def _give_up(self, lease: _Lease) -> None:
        await asyncio.shield(
            asyncio.wait_for(
                self._pool.execute(self._q["lease_release"], lease.run_id, lease.token),
                timeout=_RECORD_TIMEOUT_SECONDS,
            )
        )

    async def _release(self, lease: _Lease) -> None:
        """Give the lease up at once (best effort: an unreleased lease expires on its own)."""
        try:
            await self._give_up(lease)
        except (DatabaseError, asyncio.CancelledError) as exc:
            # Saying so must not hide the error the run itself is failing with.
            _log.warning(
                "store.lease_not_released",
                error=str(exc) or type(exc).__name__,
                note=f"it expires within {self._lease_seconds:g} s",
            )

    async def fence(self, conn: Conn) -> None:
        """Inside a write transaction: raise LeaseLost unless the lease held is still this run's.

        Locks the lease row until the transaction ends, so nobody takes the lease meanwhile, and
        dates the holder's ledger row (``lease_taken``) if it is there and undated (approve's).
        """
        lease = self._lease
        if lease is None:
            return
        if not await conn.fetchval(self._q["lease_fence"], lease.run_id, lease.token):
            raise LeaseLost(
                "the run lost its lease (it expired, database.lease_seconds, or another process took "
                "it over); nothing was written, and the next run recovers"
            )
        await conn.execute(self._q["mark_taken"], lease.run_id, lease.taken_at)

    @run_errors
    async def begin_run(
        self, run_id: uuid.UUID, trigger: str, started: datetime, instances: Sequence[str] | None
    ) -> None:
        """Insert the run's ledger row as 'running' (finished NULL) before it waits for the lease."""
        await self._pool.execute(
            self._q["begin_run"],
            run_id,
            trigger,
            started,
            list(instances) if instances else None,
            holder_identity(),
        )

    async def discard_run(self, run_id: uuid.UUID) -> None:
        """Delete the run's ledger row while it is still 'running' (best effort)."""
        try:
            await self._discard(run_id)
        except DatabaseError as exc:
            _log.warning("store.run_not_discarded", run_id=str(run_id), error=str(exc))

    @run_errors
    async def _discard(self, run_id: uuid.UUID) -> None:
        await self._pool.execute(self._q["discard_run"], run_id, timeout=_RECORD_TIMEOUT_SECONDS)

    @run_errors
    async def expired_holder(self) -> tuple[uuid.UUID, datetime] | None:
        """The run still 'running' whose lease expired (its process died), and when it expired on
        this process's clock (the database's time, moved by the two clocks' difference)."""
        row = await self._pool.fetchrow(self._q["expired_holder"])
        if row is None:
            return None
        return row["holder_run"], datetime.now(UTC) - timedelta(seconds=row["age"])

    @run_errors
    async def read_rows(self, statuses: Sequence[str]) -> list[VpsRow]:
        """Every ``vps_instances`` row whose status is in scope."""
        records = await self._pool.fetch(self._q["read_rows"], list(statuses))
        return [
            VpsRow(
                id=r["id"],
                hostwinds_instance_id=r["hostwinds_instance_id"],
                status=r["status"],
                approximate_cost=r["approximate_cost"],
                seen=None if r["matched"] is None else tuple([r[column] for column in _SEEN]),
            )
            for r in records
        ]

    @run_errors
    async def read_identities(self) -> list[tuple[uuid.UUID, str | None, str | None]]:
        """(id, hostwinds_instance_id, status) of every row, to resolve ``--instance`` arguments."""
        records = await self._pool.fetch(self._q["read_identities"])
        return [(r["id"], r["hostwinds_instance_id"], r["status"]) for r in records]

    @run_errors
    async def read_observations(self, serviceids: Sequence[int]) -> dict[int, Observation]:
        """The cached observations of these services (absent: never asked, or forgotten)."""
        if not serviceids:
            return {}
        # A fleet repeats a few price answers, fingerprints and runs across thousands of services:
        # one object each, shared (observations are read-only), keeps 100,000 of them small.
        prices: dict[str, Mapping[Cycle, str]] = {}
        fingerprints: dict[str, str] = {}
        runs: dict[uuid.UUID, uuid.UUID] = {}
        observations: dict[int, Observation] = {}
        ids = list(serviceids)
        # In chunks: the raw records of one chunk at a time are all that is held beside the result.
        for start in range(0, len(ids), _OBSERVATION_CHUNK):
            records = await self._pool.fetch(
                self._q["read_observations"], ids[start : start + _OBSERVATION_CHUNK]
            )
            for r in records:
                text = r["prices"]
                parsed = prices.get(text)
                if parsed is None:
                    parsed = prices[text] = MappingProxyType(prices_from_json(text))
                observations[r["serviceid"]] = Observation(
                    serviceid=r["serviceid"],
                    prices=parsed,
                    fingerprint=fingerprints.setdefault(r["fingerprint"], r["fingerprint"]),
                    observed_at=r["observed"],
                    run_id=runs.setdefault(r["run_id"], r["run_id"]),
                )
        return observations

    @run_errors
    async def save_observations(self, observations: Sequence[Observation]) -> None:
        """Upsert a batch of observations in a transaction of its own."""
        if not observations:
            return
        await self._pool.execute(
            self._q["save_observations"],
            [o.serviceid for o in observations],
            [_prices_to_json(o) for o in observations],
            [o.fingerprint for o in observations],
            [o.observed_at for o in observations],
            [o.run_id for o in observations],
        )

    @run_errors
    async def save_price_list(self, cached: CachedPriceList) -> None:
        """Upsert one price list in a transaction of its own."""
        await self._pool.execute(
            self._q["save_price_list"],
            cached.managed,
            cached.drive_type or "",
            cached.plan_key,
            price_list_to_json(cached.plans),
            cached.observed_at,
            cached.run_id,
        )

    @run_errors
    async def oldest_observation(self, statuses: Sequence[str]) -> datetime | None:
        """When the oldest cached observation a row in scope relies on was made; None: there is none."""
        oldest: datetime | None = await self._pool.fetchval(self._q["oldest_observation"], list(statuses))
        return oldest

    @run_errors
    async def price_references(
        self, row_ids: Sequence[uuid.UUID], *, window_seconds: float
    ) -> dict[uuid.UUID, Reference]:
        """What cost-sync's history says of these rows (rows without history are left out)."""
        if not row_ids:
            return {}
        records = await self._pool.fetch(self._q["price_references"], list(row_ids), window_seconds)
        return {
            r["id"]: Reference(
                last_written=r["last_written"],
                anchor=r["approved"] if r["approved"] is not None else r["standing"],
                anchor_approved=r["approved"] is not None,
            )
            for r in records
            if r["last_written"] is not None
        }

    @run_errors
    async def last_good_run(self) -> LastRun | None:
        """The last successful whole-fleet run, if any."""
        record = await self._pool.fetchrow(self._q["last_good_run"])
        if record is None:
            return None
        plans = record["plans_in_use"]
        return LastRun(record["id"], record["finished"], None if plans is None else list(plans))

    @run_errors
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
        """Store every changed estimate, its history row and the run's ledger row in one transaction.

        Held changes are stored instead of applied, held changes the run no longer proposes are
        cleared, and changed row states are written, all in the same transaction.
        """
        async with write_transaction(
            self._pool, lock_timeout=self._write_lock_timeout, writer="the write", undone="written"
        ) as conn:
            return await self._commit(
                conn,
                run_id,
                outcomes,
                statuses=statuses,
                finish=finish,
                held=held,
                decided=decided,
                row_states=row_states,
            )

    async def _commit(
        self,
        conn: Conn,
        run_id: uuid.UUID,
        outcomes: Sequence[RowOutcome],
        *,
        statuses: Sequence[str],
        finish: Callable[[int], RunReport],
        held: Sequence[HeldChange],
        decided: Sequence[uuid.UUID],
        row_states: Sequence[RowState],
    ) -> RunReport:
        await self.fence(conn)
        held_ids = {h.row_id for h in held}
        updated = await self._write_estimates(
            conn, [o for o in outcomes if o.row.id not in held_ids], statuses=statuses, run_id=run_id
        )
        await self._write_held(conn, run_id, held, decided)
        await self._write_row_states(conn, run_id, row_states)
        # The ledger row goes in last, with the final count, in the same transaction.
        report = finish(updated)
        await self._insert_run(conn, report)
        return report

    @run_errors
    async def record_run(self, report: RunReport) -> None:
        """Write a ledger row on its own connection, within a few seconds or not at all."""
        async with self._pool.acquire(timeout=_RECORD_TIMEOUT_SECONDS) as conn:
            await self._insert_run(conn, report, timeout=_RECORD_TIMEOUT_SECONDS)

    async def write_attribution(self, settings: Settings, run_id: uuid.UUID) -> int:
        """Replace cost_sync_tenant_costs from the committed state, in a transaction of its own."""
        return await attribution_store.write_snapshot(self._pool, settings, run_id=run_id)

    async def _insert_run(self, conn: Conn, report: RunReport, *, timeout: float | None = None) -> None:
        await insert_run(conn, report, timeout=timeout)

    async def _write_held(
        self, conn: Conn, run_id: uuid.UUID, held: Sequence[HeldChange], decided: Sequence[uuid.UUID]
    ) -> None:
        # The held table is small (usually empty): read it rather than send every decided id.
        kept = {r[0] for r in await conn.fetch(self._q["held_ids"])}
        proposed = {h.row_id for h in held}
        cleared = [row_id for row_id in decided if row_id in kept and row_id not in proposed]
        if cleared:
            await conn.execute(self._q["clear_held"], cleared)
        if not held:
            return
        await conn.execute(
            self._q["upsert_held"],
            [h.row_id for h in held],
            [h.hostwinds_instance_id for h in held],
            [h.old for h in held],
            [h.proposed.monthly for h in held],
            [h.ratio for h in held],
            [h.reason for h in held],
            run_id,
            [h.proposed.source.value for h in held],
            [h.proposed.cycle.value if h.proposed.cycle else None for h in held],
            [h.proposed.cycle_price for h in held],
            [h.proposed.months for h in held],
            [h.proposed.hourly_ceiling for h in held],
            [h.proposed.product_id for h in held],
            [h.proposed.product_name for h in held],
            [h.proposed.cycle_alias for h in held],
        )

    async def _write_row_states(self, conn: Conn, run_id: uuid.UUID, states: Sequence[RowState]) -> None:
        if not states:
            return
        await conn.execute(
            self._q["upsert_row_states"],
            [s.row_id for s in states],
            [s.matched for s in states],
            [s.serviceid for s in states],
            [s.server_uuid for s in states],
            [s.product_id for s in states],
            [s.unpriced_reason for s in states],
            [s.unpriced_detail for s in states],
            [s.upgrade_available for s in states],
            run_id,
        )

    async def _write_estimates(
        self, conn: Conn, outcomes: Sequence[RowOutcome], *, statuses: Sequence[str], run_id: uuid.UUID
    ) -> int:
        priced = [(o.row, o.result) for o in outcomes if isinstance(o.result, Estimate) and o.changed]
        if not priced:
            return 0
        ids: list[uuid.UUID] = []
        costs: list[Decimal] = []
        refs: list[int] = []
        bases: dict[tuple[object, ...], int] = {}
        for row, est in priced:
            basis = (
                est.source.value,
                est.cycle.value if est.cycle else None,
                est.cycle_price,
                est.months,
                est.hourly_ceiling,
                est.product_id,
                est.product_name,
                est.cycle_alias,
                est.fallback.value if est.fallback else None,
                est.provisional,
            )
            ids.append(row.id)
            costs.append(est.monthly)
            # Positions count from 1, as WITH ORDINALITY does.
            refs.append(bases.setdefault(basis, len(bases) + 1))
        basis_columns = [list(column) for column in zip(*bases, strict=True)]
        # asyncpg prepares and caches statements; after five executions PostgreSQL may switch to a
        # generic plan that cannot see the arrays' sizes and joins them badly. Plan each run afresh.
        await conn.execute(self._q["plan_each_run"])
        status = await conn.execute(
            self._q["write_estimates"], run_id, ids, costs, refs, *basis_columns, list(statuses)
        )
        # "INSERT 0 <n>": one history row per updated row.
        return int(status.rsplit(" ", 1)[-1])


async def insert_run(conn: Conn, report: RunReport, *, timeout: float | None = None) -> None:
    """Insert one run ledger row on ``conn`` (inside the caller's transaction, if any)."""
    await conn.execute(
        queries("sync")["insert_run"],
        report.run_id,
        report.trigger,
        report.outcome,
        report.started_at,
        report.finished_at,
        list(report.instances) if report.instances else None,
        report.rows_in_scope,
        report.matched,
        report.updated,
        report.unchanged,
        sum(report.unpriced_by_reason.values()),
        _json(report.priced_by_source),
        _json(report.unpriced_by_reason),
        _json(report.hostwinds_calls),
        report.error,
        report.price_cache.model_dump_json(),
        report.held,
        report.plans_in_use,
        list(report.warnings),
        _json(report.plan_names),
        timeout=timeout,
    )


def _json(counts: dict[str, int]) -> str:
    return json.dumps(counts, sort_keys=True)


def _prices_to_json(observation: Observation) -> str:
    return json.dumps({cycle.value: text for cycle, text in observation.prices.items()}, sort_keys=True)


def prices_from_json(text: str) -> dict[Cycle, str]:
    """A cached observation's ``prices`` column: each known cycle's exact price text."""
    data = json.loads(text)
    return _prices(data)


def _prices(data: Mapping[str, object]) -> dict[Cycle, str]:
    return {_CYCLES[key]: value for key, value in data.items() if key in _CYCLES and isinstance(value, str)}


def price_list_to_json(plans: Mapping[int, Plan]) -> str:
    """A price list as ``cost_sync_price_lists.plans`` keeps it: by join key, cells made cacheable."""
    return json.dumps(
        {
            str(key): {
                "id": plan.id,
                "rid": plan.rid,
                # One printable line, secret-shaped fields redacted: storable in jsonb whatever was sent.
                "name": None if plan.name is None else redact(plan.name, limit=_PLAN_NAME_MAX),
                "prices": {cycle.value: cacheable_cell(cell) for cycle, cell in plan.prices.items()},
                # Only when set: lists cached before custom plans were told apart read the same.
                **({"custom": True} if plan.custom else {}),
            }
            for key, plan in plans.items()
        },
        sort_keys=True,
    )


def price_list_from_json(text: str) -> dict[int, Plan]:
    """The plans of a cached price list by their join key (an unreadable entry is left out)."""
    plans: dict[int, Plan] = {}
    for key, entry in json.loads(text).items():
        try:
            plans[int(key)] = Plan(
                id=entry["id"],
                rid=entry.get("rid"),
                name=entry.get("name"),
                prices=_prices(entry["prices"]),
                custom=entry.get("custom") is True,
            )
        except (KeyError, TypeError, ValueError):
            continue
    return plans


if TYPE_CHECKING:
    # mypy holds the store to its protocol.
    _run_store: type[RunStore] = Store
