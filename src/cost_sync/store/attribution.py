"""asyncpg access for tenant attribution: reads the platform's tenant path, writes cost_sync_tenant_costs.

Guarantees: every read happens in one read-only, repeatable-read transaction (one consistent
picture of the fleet); the tables and columns needed are checked first and a missing one raises
:class:`~cost_sync.errors.MissingSchemaError` naming it, before anything is written; a snapshot
replaces the table's content as a whole, in its own transaction, serialised with other snapshot
writers by an advisory lock. Never opens or closes a pool.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
import structlog

from cost_sync.domain import attribution
from cost_sync.domain.attribution import IpRow, Report, Rules, Vps
from cost_sync.domain.gc_pause import gc_paused
from cost_sync.errors import MissingSchemaError
from cost_sync.settings import Settings
from cost_sync.store.db import database_errors

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger("cost_sync.attribution_store")

#: A connection of its own or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

#: Advisory lock key serialising snapshot writers (ASCII "cs-attr").
SNAPSHOT_LOCK_KEY = 0x63732D61747472

#: What attribution reads: table -> the columns it needs.
REQUIRED: dict[str, tuple[str, ...]] = {
    "vps_instances": ("id", "hostwinds_instance_id", "status", "approximate_cost"),
    "smtp_ip_addresses": ("id", "vps_instance_id", "status"),
    "domain_ip_assignments": ("domain_id", "smtp_ip_address_id", "status"),
    "domains": ("id", "tenant_id"),
    "cost_sync_history": ("vps_instance_id", "new_cost", "created"),
    "cost_sync_row_state": ("vps_instance_id", "unpriced_reason"),
}
#: What a snapshot writes (migration 0004).
SNAPSHOT_TABLE: dict[str, tuple[str, ...]] = {
    "cost_sync_tenant_costs": (
        "snapshot_id",
        "run_id",
        "computed_at",
        "bucket",
        "tenant_ref",
        "tenant_name",
        "vps_instance_id",
        "hostwinds_instance_id",
        "vps_cost",
        "ip_cost",
        "ip_count",
        "unpriced",
    ),
    # Migration 0011: one attribution per tenant per day, for the cost over time.
    "cost_sync_tenant_daily": ("day", "snapshot_id", "bucket", "tenant_ref", "total"),
}

_COLUMNS = """
SELECT table_name, column_name
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ANY($1::text[])
"""

# The latest price cost-sync wrote for each row: a stored value that differs (or no history at
# all) makes the row unpriced. A run changes a row at most once, so `created` orders them. The
# row's state says whether the last run that decided it could not price it (its value is kept).
_READ_VPS = """
SELECT v.id::text AS id, v.hostwinds_instance_id, v.status, v.approximate_cost,
       (SELECT h.new_cost FROM cost_sync_history h
        WHERE h.vps_instance_id = v.id ORDER BY h.created DESC LIMIT 1) AS last_written,
       s.unpriced_reason
FROM vps_instances v
LEFT JOIN cost_sync_row_state s ON s.vps_instance_id = v.id
WHERE v.status = ANY($1::text[])
"""

_READ_IPS = """
SELECT s.id::text AS id, s.vps_instance_id::text AS vps_instance_id, s.status, {cost} AS approximate_cost
FROM smtp_ip_addresses s JOIN vps_instances v ON v.id = s.vps_instance_id
WHERE v.status = ANY($1::text[])
"""

# Every counted assignment, in scope or not: joining the IPs and their VPS to keep only those in
# scope costs PostgreSQL more than reading the rest costs cost-sync, which looks up the takers of
# the IPs in scope only. A tenant with many domains on one IP is one taker (_tenants_by_ip).
_READ_ASSIGNMENTS = """
SELECT a.smtp_ip_address_id::text AS ip_id, d.tenant_id::text AS tenant_id
FROM domain_ip_assignments a
JOIN domains d ON d.id = a.domain_id
WHERE a.status = ANY($1::text[]) AND d.tenant_id IS NOT NULL
"""

_READ_TENANT_NAMES = "SELECT id::text AS id, name FROM tenants WHERE id::text = ANY($1::text[])"

_NEWER_EXISTS = "SELECT EXISTS (SELECT 1 FROM cost_sync_tenant_costs WHERE computed_at > $1)"

_INSERT_SNAPSHOT = """
INSERT INTO cost_sync_tenant_costs (snapshot_id, run_id, computed_at, bucket, tenant_ref, tenant_name,
                                    vps_instance_id, hostwinds_instance_id, vps_cost, ip_cost,
                                    ip_count, unpriced)
SELECT $1, $2, $3, l.bucket, l.tenant_ref, l.tenant_name, l.vps_instance_id, l.hostwinds_instance_id,
       l.vps_cost, l.ip_cost, l.ip_count, l.unpriced
FROM unnest($4::text[], $5::uuid[], $6::text[], $7::uuid[], $8::text[], $9::numeric[], $10::numeric[],
            $11::int[], $12::bool[])
     AS l(bucket, tenant_ref, tenant_name, vps_instance_id, hostwinds_instance_id, vps_cost, ip_cost,
          ip_count, unpriced)
"""


# The day's rows are the snapshot just written, summed per tenant by the view the dashboards read
# (one definition of the sums); days older than $1 are forgotten.
_REPLACE_DAY = """
DELETE FROM cost_sync_tenant_daily WHERE day = ($1::timestamptz AT TIME ZONE 'UTC')::date
"""
_INSERT_DAY = """
INSERT INTO cost_sync_tenant_daily (day, snapshot_id, computed_at, bucket, tenant_ref, tenant_name,
                                    vps_cost, ip_cost, total, vps_count, ip_count, unpriced_vps)
SELECT (m.computed_at AT TIME ZONE 'UTC')::date, m.snapshot_id, m.computed_at, m.bucket, m.tenant_ref,
       m.tenant_name, m.vps_cost, m.ip_cost, m.total, m.vps_count, m.ip_count, m.unpriced_vps
FROM cost_sync_tenant_monthly m
"""
_FORGET_DAYS = """
DELETE FROM cost_sync_tenant_daily
WHERE day < ($1::timestamptz AT TIME ZONE 'UTC')::date - $2::int
"""


def rules(settings: Settings) -> Rules:
    """The attribution rules the settings name."""
    return Rules(
        assignment_statuses=frozenset(settings.attribution.assignment_statuses),
        idle_ip_statuses=frozenset(settings.attribution.idle_ip_statuses),
    )


async def _columns(conn: Conn, tables: Sequence[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for record in await conn.fetch(_COLUMNS, list(tables)):
        found.setdefault(record["table_name"], set()).add(record["column_name"])
    return found


def _missing(required: dict[str, tuple[str, ...]], found: dict[str, set[str]]) -> list[str]:
    problems: list[str] = []
    for table, columns in required.items():
        if table not in found:
            problems.append(f"table {table}")
            continue
        problems += [f"column {table}.{column}" for column in columns if column not in found[table]]
    return problems


async def check_schema(conn: Conn, *, snapshot: bool = False) -> list[str]:
    """What attribution needs and the database lacks ("table x", "column x.y"); empty when all is there."""
    required = {**REQUIRED, **(SNAPSHOT_TABLE if snapshot else {})}
    return _missing(required, await _columns(conn, list(required)))


def _schema_error(missing: list[str]) -> MissingSchemaError:
    hint = (
        " (cost-sync's own tables come with `cost-sync migrate`)"
        if any("cost_sync_" in m for m in missing)
        else ""
    )
    return MissingSchemaError(
        f"tenant attribution needs what the database lacks (or this user cannot read): "
        f"{', '.join(missing)}{hint}"
    )


def _mapped() -> AbstractContextManager[None]:
    return database_errors("tenant attribution failed in PostgreSQL")


def _vps(record: asyncpg.Record) -> Vps:
    """A VPS as _READ_VPS reads it, with why its value is not a current cost-sync price (if so)."""
    cost = record["approximate_cost"]
    why = attribution.why_unpriced(cost, record["last_written"], record["unpriced_reason"])
    return Vps(
        id=record["id"],
        hostwinds_instance_id=record["hostwinds_instance_id"],
        status=record["status"],
        approximate_cost=cost,
        unpriced=why is not None,
        why=why,
    )


def _tenants_by_ip(records: Iterable[asyncpg.Record]) -> dict[str, list[str]]:
    """(ip_id, tenant_id) records -> each IP's distinct tenants in ascending order."""
    found: dict[str, list[str]] = {}
    for ip_id, tenant in records:
        tenants = found.get(ip_id)
        if tenants is None:
            found[ip_id] = [tenant]
        elif tenant not in tenants:
            tenants.append(tenant)
    for tenants in found.values():
        if len(tenants) > 1:
            tenants.sort()
    return found


async def _read(conn: Conn, settings: Settings) -> Report:
    optional = await _columns(conn, ["smtp_ip_addresses", "tenants"])
    has_ip_cost = "approximate_cost" in optional.get("smtp_ip_addresses", set())
    has_names = {"id", "name"} <= optional.get("tenants", set())
    statuses = list(settings.sync.statuses)
    vps = [_vps(r) for r in await conn.fetch(_READ_VPS, statuses)]
    ip_sql = _READ_IPS.format(cost="s.approximate_cost" if has_ip_cost else "NULL::numeric")
    counted = list(settings.attribution.assignment_statuses)
    takers = _tenants_by_ip(await conn.fetch(_READ_ASSIGNMENTS, counted))
    no_tenants: list[str] = []
    ips_by_vps: dict[str, list[IpRow]] = {}
    for ip_id, vps_id, status, cost in await conn.fetch(ip_sql, statuses):
        row: IpRow = (ip_id, status, cost, takers.get(ip_id, no_tenants))
        found = ips_by_vps.get(vps_id)
        if found is None:
            ips_by_vps[vps_id] = [row]
        else:
            found.append(row)
    allocation = attribution.allocate_rows(
        vps, ips_by_vps, settings.attribution.idle_ip_statuses, has_ip_cost=has_ip_cost
    )
    names: dict[str, str | None] = dict.fromkeys(allocation.tenant_ids)
    if has_names and allocation.tenant_ids:
        for r in await conn.fetch(_READ_TENANT_NAMES, list(allocation.tenant_ids)):
            names[r["id"]] = r["name"]
    # The database's clock, at the start of this transaction: the moment the picture shows, and
    # comparable across the processes that may write snapshots.
    generated_at: datetime = await conn.fetchval("SELECT now()")
    return Report(
        allocation=allocation,
        tenant_names=names,
        statuses=tuple(statuses),
        generated_at=generated_at.astimezone(UTC),
    )


async def compute(pool: asyncpg.Pool, settings: Settings, *, snapshot: bool = False) -> Report:
    """Read the fleet and its tenant path in one consistent snapshot and attribute it.

    With ``snapshot``, the snapshot table must exist too. Raises MissingSchemaError naming what is
    missing, DatabaseError if PostgreSQL fails.
    """
    with _mapped():
        async with pool.acquire() as conn:
            missing = await check_schema(conn, snapshot=snapshot)
            if missing:
                raise _schema_error(missing)
            # A fleet's rows become a million short-lived records and as many lines, none in a
            # cycle: the cyclic collector walking them again and again would double the time.
            with gc_paused():
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    # The reads are large, simple scans and joins: compiling them (JIT) takes
                    # longer than it saves.
                    await conn.execute("SET LOCAL jit = off")
                    return await _read(conn, settings)


async def store_snapshot(
    pool: asyncpg.Pool, report: Report, *, run_id: uuid.UUID | None = None, keep_days: int = 400
) -> int:
    """Replace cost_sync_tenant_costs with ``report``'s lines in one transaction; return rows written.

    The same transaction replaces the day's rows of cost_sync_tenant_daily with the snapshot summed
    per tenant and forgets days older than ``keep_days``. A stored snapshot newer than ``report``
    is kept (0 rows written).
    """
    lines = attribution.snapshot_lines(report.allocation)
    vps_by_id = {a.vps.id: a.vps for a in report.allocation.vps}
    columns: list[list[object]] = [[] for _ in range(9)]
    for line in lines:
        row = (
            "tenant" if line.tenant_id else "unallocated",
            line.tenant_id,
            report.tenant_names.get(line.tenant_id) if line.tenant_id else None,
            line.vps_instance_id,
            vps_by_id[line.vps_instance_id].hostwinds_instance_id,
            line.vps_cost,
            line.ip_cost,
            line.ip_count,
            line.unpriced,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    with _mapped():
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SNAPSHOT_LOCK_KEY)
            # Two writers (a daemon run and `attribution --write`) may read, then write in the
            # other order: the picture read last wins, an older one never replaces it.
            if await conn.fetchval(_NEWER_EXISTS, report.generated_at):
                log.info("attribution.snapshot_skipped", reason="a newer snapshot is stored")
                return 0
            await conn.execute("DELETE FROM cost_sync_tenant_costs")
            await conn.execute(_INSERT_SNAPSHOT, uuid.uuid4(), run_id, report.generated_at, *columns)
            await conn.execute(_REPLACE_DAY, report.generated_at)
            await conn.execute(_INSERT_DAY)
            await conn.execute(_FORGET_DAYS, report.generated_at, keep_days)
    allocation = report.allocation
    log.info(
        "attribution.snapshot_written",
        run_id=str(run_id) if run_id else None,
        rows=len(lines),
        tenants=len(allocation.tenant_ids),
        allocated=str(allocation.allocated),
        unallocated=str(allocation.unallocated_vps_cost + allocation.unallocated_ip_cost),
        fleet_monthly_total=str(allocation.fleet_monthly_total),
        unpriced_vps=len(allocation.unpriced),
    )
    return len(lines)


async def write_snapshot(pool: asyncpg.Pool, settings: Settings, *, run_id: uuid.UUID | None = None) -> int:
    """Attribute the fleet now and replace the snapshot with it; return the rows written."""
    report = await compute(pool, settings, snapshot=True)
    return await store_snapshot(pool, report, run_id=run_id, keep_days=settings.attribution.keep_days)
