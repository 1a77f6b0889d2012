"""The run's database access: one :class:`Store` over an asyncpg pool, its queries in ``sql/queries/``.

Guarantees: a run's writes (changed values, their history rows, the run's ledger row) happen in one
transaction, in one statement each; only rows whose value differs are updated (``IS DISTINCT
FROM``), so a steady-state run writes nothing but its ledger row; a row whose status left the scope
during the run is not touched. Price observations are committed on their own, apart from that
transaction. Runs are exclusive across processes through an advisory lock. Every database failure
leaves this module as a :class:`~cost_sync.errors.DatabaseError`; the store never opens or closes
the pool it is handed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeAlias

import asyncpg
import structlog

from cost_sync import attribution_store
from cost_sync.db import database_errors
from cost_sync.errors import DatabaseError, LockTimeout
from cost_sync.guard import Reference
from cost_sync.models import (
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
from cost_sync.pricing import cacheable_cell
from cost_sync.redact import redact
from cost_sync.settings import Settings
from cost_sync.sqlfiles import sql_dir

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "SYNC_LOCK_KEY",
    "CachedPriceList",
    "Conn",
    "LastRun",
    "RunStore",
    "Store",
    "insert_run",
    "mapped",
    "price_list_from_json",
    "price_list_to_json",
    "prices_from_json",
    "queries",
]

_log = structlog.get_logger(__name__)

#: Advisory lock key making sync runs exclusive (ASCII "cs-sync").
SYNC_LOCK_KEY = 0x63732D73796E63
_LOCK_POLL_SECONDS = 0.2
#: Observations read per statement.
_OBSERVATION_CHUNK = 10_000
#: A cached plan name is cut to this many characters.
_PLAN_NAME_MAX = 200
#: How long recording a failed run may take: the database may be what failed.
_RECORD_TIMEOUT_SECONDS = 5.0

#: A connection of its own or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

_QUERY_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)
_CYCLES = {cycle.value: cycle for cycle in Cycle}


@cache
def queries(group: str = "sync") -> dict[str, str]:
    """The named queries of ``sql/queries/<group>.sql`` (``-- name: NAME`` starts each one)."""
    text = (sql_dir() / "queries" / f"{group}.sql").read_text(encoding="utf-8")
    parts = _QUERY_NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _mapped() -> AbstractContextManager[None]:
    """Driver and network errors of the run's statements, as the run's DatabaseError."""
    return database_errors("the run failed in PostgreSQL")


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


#: For the other database readers (cost_sync.trust_store): the same error mapping.
mapped = _mapped


class RunStore(Protocol):
    """What a sync run needs of a database; :class:`Store` is the real one."""

    def lock(self, *, timeout: float) -> AbstractAsyncContextManager[None]:
        """Hold the run lock; wait up to ``timeout`` seconds, then raise LockTimeout."""
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


class Store:
    """The real :class:`RunStore`, on an asyncpg pool it does not own."""

    def __init__(self, pool: asyncpg.Pool, *, write_lock_timeout: float | None = None) -> None:
        self._pool = pool
        self._q = queries("sync")
        #: How long the write may wait for a row locked by another transaction (None: unbounded).
        self._write_lock_timeout = write_lock_timeout
        #: The backend holding the run lock while :meth:`lock` is entered.
        self._lock_pid: int | None = None

    @asynccontextmanager
    async def lock(self, *, timeout: float) -> AsyncIterator[None]:
        """Hold the sync advisory lock on a connection of its own for the block's duration.

        Only the lock's own statements are mapped to DatabaseError: what the block raises passes
        through as it is.
        """
        deadline = time.monotonic() + timeout
        with _mapped():
            conn = await self._pool.acquire()
        try:
            with _mapped():
                while not await conn.fetchval(self._q["try_lock"], SYNC_LOCK_KEY):
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"another run is in progress (waited {timeout:g} s for it to finish)"
                        )
                    await asyncio.sleep(_LOCK_POLL_SECONDS)
            self._lock_pid = conn.get_server_pid()
            try:
                yield
            finally:
                self._lock_pid = None
                await self._unlock(conn)
        finally:
            await self._pool.release(conn)

    async def _unlock(self, conn: Conn) -> None:
        try:
            # is_closed() too: once its connection is lost, asyncpg detaches the pool's proxy.
            if conn.is_closed():
                return
            await conn.execute(self._q["unlock"], SYNC_LOCK_KEY)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # A broken connection: PostgreSQL drops a session's advisory locks with it. Saying so
            # must not hide the error the run itself is failing with.
            _log.warning("store.unlock_failed", error=f"{type(exc).__name__}: {exc}")

    async def read_rows(self, statuses: Sequence[str]) -> list[VpsRow]:
        """Every ``vps_instances`` row whose status is in scope."""
        with _mapped():
            records = await self._pool.fetch(self._q["read_rows"], list(statuses))
        return [
            VpsRow(
                id=r["id"],
                hostwinds_instance_id=r["hostwinds_instance_id"],
                status=r["status"],
                approximate_cost=r["approximate_cost"],
                seen=None if r["matched"] is None else tuple(r.values())[4:],
            )
            for r in records
        ]

    async def read_identities(self) -> list[tuple[uuid.UUID, str | None, str | None]]:
        """(id, hostwinds_instance_id, status) of every row, to resolve ``--instance`` arguments."""
        with _mapped():
            records = await self._pool.fetch(self._q["read_identities"])
        return [(r["id"], r["hostwinds_instance_id"], r["status"]) for r in records]

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
            with _mapped():
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

    async def save_observations(self, observations: Sequence[Observation]) -> None:
        """Upsert a batch of observations in a transaction of its own."""
        if not observations:
            return
        with _mapped():
            await self._pool.execute(
                self._q["save_observations"],
                [o.serviceid for o in observations],
                [_prices_to_json(o) for o in observations],
                [o.fingerprint for o in observations],
                [o.observed_at for o in observations],
                [o.run_id for o in observations],
            )

    async def save_price_list(self, cached: CachedPriceList) -> None:
        """Upsert one price list in a transaction of its own."""
        with _mapped():
            await self._pool.execute(
                self._q["save_price_list"],
                cached.managed,
                cached.drive_type or "",
                cached.plan_key,
                price_list_to_json(cached.plans),
                cached.observed_at,
                cached.run_id,
            )

    async def oldest_observation(self, statuses: Sequence[str]) -> datetime | None:
        """When the oldest cached observation a row in scope relies on was made; None: there is none."""
        with _mapped():
            oldest: datetime | None = await self._pool.fetchval(self._q["oldest_observation"], list(statuses))
        return oldest

    async def price_references(
        self, row_ids: Sequence[uuid.UUID], *, window_seconds: float
    ) -> dict[uuid.UUID, Reference]:
        """What cost-sync's history says of these rows (rows without history are left out)."""
        if not row_ids:
            return {}
        with _mapped():
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

    async def last_good_run(self) -> LastRun | None:
        """The last successful whole-fleet run, if any."""
        with _mapped():
            record = await self._pool.fetchrow(self._q["last_good_run"])
        if record is None:
            return None
        plans = record["plans_in_use"]
        return LastRun(record["id"], record["finished"], None if plans is None else list(plans))

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
        wait = self._write_lock_timeout
        try:
            with _mapped():
                async with self._pool.acquire() as conn, conn.transaction():
                    if wait is not None:
                        # PostgreSQL reads 0 as "no limit": the least bound is 1 ms.
                        await conn.execute(f"SET LOCAL lock_timeout = {max(1, round(wait * 1000))}")
                    report = await self._commit(
                        conn,
                        run_id,
                        outcomes,
                        statuses=statuses,
                        finish=finish,
                        held=held,
                        decided=decided,
                        row_states=row_states,
                    )
        except DatabaseError as exc:
            if isinstance(exc.__cause__ or exc.__context__, asyncpg.LockNotAvailableError):
                raise DatabaseError(
                    f"the write waited {wait:g} s for vps_instances rows locked by another transaction "
                    "and gave up; nothing was written (database.lock_timeout_seconds)"
                ) from None
            raise
        return report

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
        if self._lock_pid is not None and not await conn.fetchval(
            self._q["lock_held"], self._lock_pid, SYNC_LOCK_KEY
        ):
            raise DatabaseError(
                "the run lost its lock (the connection holding it was terminated); nothing was "
                "written, and the next run recovers"
            )
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

    async def record_run(self, report: RunReport) -> None:
        """Write a ledger row on its own connection, within a few seconds or not at all."""
        with _mapped():
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
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
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
