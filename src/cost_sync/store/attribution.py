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
from datetime import UTC, datetime

import asyncpg
import structlog

from cost_sync.domain import attribution
from cost_sync.domain.attribution import IpRow, Report, Rules, Vps
from cost_sync.domain.gc_pause import gc_paused
from cost_sync.errors import MissingSchemaError
from cost_sync.settings import Settings
from cost_sync.store.db import Conn, maps_errors
from cost_sync.store.sqlfiles import queries

log = structlog.get_logger("cost_sync.attribution_store")

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

_Q = queries("attribution")


def rules(settings: Settings) -> Rules:
    """The attribution rules the settings name."""
    return Rules(
        assignment_statuses=frozenset(settings.attribution.assignment_statuses),
        idle_ip_statuses=frozenset(settings.attribution.idle_ip_statuses),
    )


async def _columns(conn: Conn, tables: Sequence[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for record in await conn.fetch(_Q["columns"], list(tables)):
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


#: Driver and network errors, once per function that talks to PostgreSQL.
_mapped = maps_errors("tenant attribution failed in PostgreSQL")


def _vps(record: asyncpg.Record) -> Vps:
    """A VPS as ``read_vps`` reads it, with why its value is not a current cost-sync price (if so)."""
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
    vps = [_vps(r) for r in await conn.fetch(_Q["read_vps"], statuses)]
    ip_sql = _Q["read_ips"].format(cost="s.approximate_cost" if has_ip_cost else "NULL::numeric")
    counted = list(settings.attribution.assignment_statuses)
    takers = _tenants_by_ip(await conn.fetch(_Q["read_assignments"], counted))
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
        for r in await conn.fetch(_Q["read_tenant_names"], list(allocation.tenant_ids)):
            names[r["id"]] = r["name"]
    # The database's clock, at the start of this transaction: the moment the picture shows, and
    # comparable across the processes that may write snapshots.
    generated_at: datetime = await conn.fetchval(_Q["now"])
    return Report(
        allocation=allocation,
        tenant_names=names,
        statuses=tuple(statuses),
        generated_at=generated_at.astimezone(UTC),
    )


@_mapped
async def compute(pool: asyncpg.Pool, settings: Settings, *, snapshot: bool = False) -> Report:
    """Read the fleet and its tenant path in one consistent snapshot and attribute it.

    With ``snapshot``, the snapshot table must exist too. Raises MissingSchemaError naming what is
    missing, DatabaseError if PostgreSQL fails.
    """
    async with pool.acquire() as conn:
        missing = await check_schema(conn, snapshot=snapshot)
        if missing:
            raise _schema_error(missing)
        # A fleet's rows become a million short-lived records and as many lines, none in a
        # cycle: the cyclic collector walking them again and again would double the time.
        with gc_paused():
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(_Q["no_jit"])
                return await _read(conn, settings)


@_mapped
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
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_Q["snapshot_lock"], SNAPSHOT_LOCK_KEY)
        # Two writers (a daemon run and `attribution --write`) may read, then write in the
        # other order: the picture read last wins, an older one never replaces it.
        if await conn.fetchval(_Q["newer_exists"], report.generated_at):
            log.info("attribution.snapshot_skipped", reason="a newer snapshot is stored")
            return 0
        await conn.execute(_Q["clear_snapshot"])
        await conn.execute(_Q["insert_snapshot"], uuid.uuid4(), run_id, report.generated_at, *columns)
        await conn.execute(_Q["replace_day"], report.generated_at)
        await conn.execute(_Q["insert_day"])
        await conn.execute(_Q["forget_days"], report.generated_at, keep_days)
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
