"""Database reads for ``explain``, ``held`` and ``report``, and the one write of ``approve``.

Guarantees: queries are the named blocks of ``sql/queries/trust.sql``; nothing here calls
Hostwinds; every database failure leaves as a :class:`~cost_sync.errors.DatabaseError`; ``approve``
applies its changes, their history rows and its ledger row in one transaction, and only where a
row still holds the value the change was proposed against.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from cost_sync.domain.explain import HistoryRecord
from cost_sync.domain.matching import RowIdentity, RowIndex
from cost_sync.domain.models import RowState, RunReport
from cost_sync.domain.redact import stored_text
from cost_sync.domain.reporting import Change, HeldRow, LastFleetRun, ReportRow, TenantDay
from cost_sync.store.db import Conn
from cost_sync.store.postgres import (
    insert_run,
    price_list_from_json,
    prices_from_json,
    run_errors,
    write_transaction,
)
from cost_sync.store.protocols import CachedObservation, CachedPriceList, RowView, TrustStoreProtocol
from cost_sync.store.sqlfiles import queries

__all__ = ["CachedObservation", "RowView", "TrustStore", "TrustStoreProtocol"]


class TrustStore:
    """Reads (and the approve write) on an asyncpg pool it does not own; a :class:`TrustStoreProtocol`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._q = queries("trust")

    @run_errors
    async def identities(self) -> RowIndex:
        """Every row as an ID argument can name it, with the instance it matched at the last run."""
        records = await self._pool.fetch(self._q["read_identities"])
        return RowIndex(
            RowIdentity(r["id"], r["hostwinds_instance_id"], r["status"], r["serviceid"], r["server_uuid"])
            for r in records
        )

    @run_errors
    async def row(self, row_id: uuid.UUID) -> RowView | None:
        """The row, if it exists."""
        r = await self._pool.fetchrow(self._q["read_row"], row_id)
        if r is None:
            return None
        return RowView(
            r["id"],
            r["hostwinds_instance_id"],
            r["status"],
            r["region"],
            r["approximate_cost"],
            r["monthly_cost"],
        )

    @run_errors
    async def history(self, row_id: uuid.UUID) -> list[HistoryRecord]:
        """The row's history, newest first."""
        records = await self._pool.fetch(self._q["read_history"], row_id)
        return [
            HistoryRecord(
                run_id=r["run_id"],
                at=r["created"],
                old=r["old_cost"],
                new=r["new_cost"],
                source=r["source"],
                cycle=r["cycle"],
                cycle_price=r["cycle_price"],
                months=r["months"],
                hourly_ceiling=r["hourly_ceiling"],
                product_id=r["product_id"],
                product_name=stored_text(r["product_name"]),
                approved=r["approved"],
                proposed_by=r["proposed_by"],
                cycle_alias=r["cycle_alias"],
                fallback=r["fallback"],
                provisional=r["provisional"],
            )
            for r in records
        ]

    @run_errors
    async def row_state(self, row_id: uuid.UUID) -> RowState | None:
        """What the last run that decided the row saw of it."""
        r = await self._pool.fetchrow(self._q["read_row_state"], row_id)
        if r is None:
            return None
        return RowState(
            row_id=row_id,
            matched=r["matched"],
            serviceid=r["serviceid"],
            server_uuid=r["server_uuid"],
            product_id=r["product_id"],
            unpriced_reason=r["unpriced_reason"],
            unpriced_detail=r["unpriced_detail"],
            upgrade_available=r["upgrade_available"],
        )

    @run_errors
    async def observation(self, serviceid: int) -> CachedObservation | None:
        """The cached cycle prices of one service."""
        r = await self._pool.fetchrow(self._q["read_observation"], serviceid)
        if r is None:
            return None
        return CachedObservation(prices_from_json(r["prices"]), r["fingerprint"], r["observed"], r["run_id"])

    @run_errors
    async def price_list(
        self, managed: bool, drive_type: str | None, plan_key: str
    ) -> CachedPriceList | None:
        """The cached price list a run read with these options, if any."""
        r = await self._pool.fetchrow(self._q["read_price_list"], managed, drive_type or "", plan_key)
        if r is None:
            return None
        return CachedPriceList(
            managed, drive_type, plan_key, price_list_from_json(r["plans"]), r["observed"], r["run_id"]
        )

    @run_errors
    async def held(self, row_ids: Sequence[uuid.UUID] | None = None) -> list[HeldRow]:
        """Held changes (None: all), oldest first."""
        records = await self._pool.fetch(self._q["read_held"], None if row_ids is None else list(row_ids))
        return [
            HeldRow(
                row_id=r["vps_instance_id"],
                hostwinds_instance_id=r["hostwinds_instance_id"],
                old=r["old_cost"],
                proposed=r["proposed_cost"],
                ratio=r["ratio"],
                reason=r["reason"],
                since=r["since"],
                run_id=r["run_id"],
                source=r["source"],
            )
            for r in records
        ]

    @run_errors
    async def report_rows(self, statuses: Sequence[str]) -> list[ReportRow]:
        """Every row in scope with its latest basis and kept state."""
        records = await self._pool.fetch(self._q["report_rows"], list(statuses))
        return [
            ReportRow(
                row_id=r["id"],
                hostwinds_instance_id=r["hostwinds_instance_id"],
                status=r["status"],
                region=r["region"],
                approximate_cost=r["approximate_cost"],
                monthly_cost=r["monthly_cost"],
                source=r["source"],
                cycle=r["cycle"],
                product_id=r["product_id"],
                product_name=stored_text(r["product_name"]),
                unpriced_reason=r["unpriced_reason"],
                unpriced_detail=r["unpriced_detail"],
                upgrade_available=r["upgrade_available"],
                provisional=r["provisional"],
            )
            for r in records
        ]

    @run_errors
    async def oldest_observation(self) -> datetime | None:
        """When the oldest cached observation was made."""
        oldest: datetime | None = await self._pool.fetchval(self._q["oldest_observation"])
        return oldest

    @run_errors
    async def last_fleet_run(self) -> LastFleetRun | None:
        """The last successful whole-fleet sync and what it flagged; None before the first.

        The same run the guards compare with (the sync queries' ``last_good_run``)."""
        r = await self._pool.fetchrow(queries("sync")["last_good_run"])
        if r is None:
            return None
        return LastFleetRun(r["id"], r["trigger"], r["finished"], tuple(r["warnings"]))

    @run_errors
    async def history_since(self, statuses: Sequence[str], since: datetime) -> list[Change]:
        """Every change to a row in scope since ``since``, oldest first."""
        records = await self._pool.fetch(self._q["history_since"], list(statuses), since)
        return [
            Change(
                run_id=r["run_id"],
                row_id=r["vps_instance_id"],
                hostwinds_instance_id=r["hostwinds_instance_id"],
                old=r["old_cost"],
                new=r["new_cost"],
                at=r["created"].astimezone(UTC),
                trigger=r["trigger"],
                approved=r["approved"],
            )
            for r in records
        ]

    @run_errors
    async def tenant_days(self, since: date) -> list[TenantDay]:
        """The per-day tenant attribution kept since ``since`` (migration 0011)."""
        records = await self._pool.fetch(self._q["tenant_daily_since"], since)
        return [
            TenantDay(r["day"], r["tenant_ref"], stored_text(r["tenant_name"]), r["total"]) for r in records
        ]

    @run_errors
    async def fleet_total(self, statuses: Sequence[str]) -> Decimal:
        """The sum of the stored values of the rows in scope."""
        total: Decimal = await self._pool.fetchval(self._q["fleet_total"], list(statuses))
        return total

    @run_errors
    async def held_summary(self) -> tuple[int, datetime | None]:
        """How many changes are held, and since when the oldest waits (None: none held)."""
        r = await self._pool.fetchrow(self._q["held_summary"])
        assert r is not None
        return r["held"], r["oldest"]

    @run_errors
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
        """Apply these held changes and write the ledger row in one transaction; return the applied rows.

        ``shown`` names each change as it was read: (row, proposing run, proposed value). A change
        held under another run or value now is not applied. A row locked by another transaction
        is waited for ``lock_timeout`` seconds at most, then nothing is applied. ``fence`` (the run
        store's) refuses the transaction when the run lease was lost meanwhile.
        """
        async with write_transaction(
            self._pool, lock_timeout=lock_timeout, writer="approve", undone="approved"
        ) as conn:
            records = await conn.fetch(
                self._q["approve"],
                run_id,
                [row for row, _, _ in shown],
                list(statuses),
                [run for _, run, _ in shown],
                [value for _, _, value in shown],
            )
            applied = [r["vps_instance_id"] for r in records]
            await insert_run(conn, report.model_copy(update={"updated": len(applied)}))
            if fence is not None:
                # Before the commit, after the ledger row is in: it gets its lease_taken.
                await fence(conn)
        return applied


if TYPE_CHECKING:
    # mypy holds the store to its protocol.
    _trust_store: type[TrustStoreProtocol] = TrustStore
