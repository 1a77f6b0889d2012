"""One run: fetch from Hostwinds, price every row in scope, write the changes in one transaction.

This is the one place that orchestrates; it hands typed values from module to module and nothing
reaches back. A run that cannot finish writes nothing but a ``failed`` ledger row, and raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx
import structlog

from cost_sync import __version__, pricing, store
from cost_sync.db import create_pool
from cost_sync.errors import ConfigError, CostSyncError, DatabaseError
from cost_sync.hostwinds import HostwindsClient
from cost_sync.models import (
    Cycle,
    Estimate,
    Instance,
    Plan,
    PriceCell,
    RowOutcome,
    RunReport,
    Unpriced,
    VpsRow,
)
from cost_sync.settings import Settings

log = structlog.get_logger(__name__)

PriceListKey = tuple[bool, str | None]


@dataclass(frozen=True)
class RunResult:
    """A finished run: its report and the decision for every row in scope."""

    report: RunReport
    outcomes: list[RowOutcome] = field(default_factory=list)

    @property
    def changes(self) -> list[RowOutcome]:
        """Rows whose stored value this run changes (or, dry, would change)."""
        return [o for o in self.outcomes if o.changed]


def resolve_targets(
    targets: Sequence[str],
    identities: Iterable[tuple[uuid.UUID, str | None, str | None]],
    instances: Sequence[Instance],
    statuses: Sequence[str],
) -> tuple[set[uuid.UUID], dict[str, str]]:
    """Row ids named by ``--instance`` arguments, and why each argument naming no row in scope fails.

    An argument may be a row's ``id``, its ``hostwinds_instance_id``, or a Hostwinds ``serviceid``
    or ``server_uuid`` of the instance a row matches.
    """
    by_serviceid, by_uuid = pricing.index_instances(instances)
    rows = list(identities)
    chosen: set[uuid.UUID] = set()
    problems: dict[str, str] = {}
    for target in targets:
        key = target.strip()
        instance = pricing.match_instance(key, by_serviceid=by_serviceid, by_uuid=by_uuid)
        hits = [
            (row_id, status)
            for row_id, hw_id, status in rows
            if key.lower() == str(row_id)
            or (hw_id is not None and hw_id.strip().lower() == key.lower())
            or (
                instance is not None
                and pricing.match_instance(hw_id, by_serviceid=by_serviceid, by_uuid=by_uuid) is instance
            )
        ]
        in_scope = [row_id for row_id, status in hits if status in statuses]
        if not hits:
            problems[target] = "matches no vps_instances row"
        elif not in_scope:
            row_id, status = hits[0]
            problems[target] = f"row {row_id} has status {status!r}, which is not in scope"
        chosen.update(in_scope)
    return chosen, problems


async def _fetch_cycle_prices(
    client: HostwindsClient, serviceids: Sequence[int], workers: int
) -> dict[int, dict[Cycle, PriceCell]]:
    """Per-service cycle prices, fetched by a bounded set of workers (memory stays flat at 100k)."""
    results: dict[int, dict[Cycle, PriceCell]] = {}
    pending = iter(serviceids)

    async def worker() -> None:
        for serviceid in pending:
            results[serviceid] = await client.get_billingcycle_prices(serviceid)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(workers, len(serviceids)))):
            group.create_task(worker())
    return results


async def _fetch_price_lists(
    client: HostwindsClient, keys: Iterable[PriceListKey]
) -> dict[PriceListKey, dict[int, Plan]]:
    ordered = sorted(set(keys), key=lambda k: (k[0], k[1] or ""))
    lists = await asyncio.gather(
        *(client.get_price_list(managed=managed, drive_type=drive) for managed, drive in ordered)
    )
    return dict(zip(ordered, lists, strict=True))


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _report(
    *,
    run_id: uuid.UUID,
    trigger: str,
    started: datetime,
    outcomes: Sequence[RowOutcome],
    updated: int,
    dry_run: bool,
    calls: Mapping[str, int],
    phases: Mapping[str, float],
    instances: Sequence[str] | None,
) -> RunReport:
    estimates = [o.result for o in outcomes if isinstance(o.result, Estimate)]
    unpriced = [o.result for o in outcomes if isinstance(o.result, Unpriced)]
    before = sum((o.row.approximate_cost or Decimal(0) for o in outcomes), Decimal("0.00"))
    after = sum(
        (
            o.result.monthly if isinstance(o.result, Estimate) else (o.row.approximate_cost or Decimal(0))
            for o in outcomes
        ),
        Decimal("0.00"),
    )
    return RunReport(
        run_id=run_id,
        trigger=trigger,
        outcome="succeeded",
        dry_run=dry_run,
        started_at=started,
        finished_at=datetime.now(UTC),
        rows_in_scope=len(outcomes),
        matched=sum(1 for o in outcomes if o.instance is not None),
        priced_by_source=_count(e.source.value for e in estimates),
        unchanged=len(estimates) - sum(1 for o in outcomes if o.changed),
        changed=sum(1 for o in outcomes if o.changed),
        updated=updated,
        unpriced_by_reason=_count(u.reason.value for u in unpriced),
        hostwinds_calls=dict(sorted(calls.items())),
        total_before=before,
        total_after=after,
        phase_seconds={k: round(v, 4) for k, v in phases.items()},
        instances=list(instances) if instances else None,
    )


Match = tuple[VpsRow, Instance | None]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: pricing allocates two acyclic objects per row, and at
    100,000 rows the collector's passes over every live object took 40% of the pricing time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def match_rows(rows: Sequence[VpsRow], instances: Sequence[Instance]) -> list[Match]:
    """Pair every row with the Hostwinds instance its ``hostwinds_instance_id`` names, if any."""
    by_serviceid, by_uuid = pricing.index_instances(instances)
    with _gc_paused():
        return [
            (
                row,
                pricing.match_instance(row.hostwinds_instance_id, by_serviceid=by_serviceid, by_uuid=by_uuid),
            )
            for row in rows
        ]


def price_matched(
    matches: Sequence[Match],
    *,
    overrides: Mapping[str, Decimal],
    cycle_prices: Mapping[int, Mapping[Cycle, PriceCell]],
    price_lists: Mapping[PriceListKey, Mapping[int, Plan]],
    managed: bool,
) -> list[RowOutcome]:
    """Decide every matched row: pick its price source, estimate. Pure."""
    outcomes = []
    no_plans: Mapping[int, Plan] = {}
    with _gc_paused():
        for row, instance in matches:
            plan = None
            if instance is not None and instance.product_id is not None:
                plan = price_lists.get((managed, instance.disk_type), no_plans).get(instance.product_id)
            override = overrides.get((row.hostwinds_instance_id or "").strip()) if overrides else None
            result = pricing.price_row(
                row,
                instance,
                override=override,
                cycle_prices=cycle_prices.get(instance.serviceid) if instance else None,
                plan=plan,
            )
            outcomes.append(RowOutcome(row, instance, result))
    return outcomes


def price_rows(
    rows: Sequence[VpsRow],
    instances: Sequence[Instance],
    *,
    overrides: Mapping[str, Decimal],
    cycle_prices: Mapping[int, Mapping[Cycle, PriceCell]],
    price_lists: Mapping[PriceListKey, Mapping[int, Plan]],
    managed: bool,
) -> list[RowOutcome]:
    """Decide every row: match it to its instance, pick its price source, estimate. Pure."""
    return price_matched(
        match_rows(rows, instances),
        overrides=overrides,
        cycle_prices=cycle_prices,
        price_lists=price_lists,
        managed=managed,
    )


async def run_once(
    *,
    client: HostwindsClient,
    pool: asyncpg.Pool,
    settings: Settings,
    trigger: str = "once",
    targets: Sequence[str] | None = None,
    dry_run: bool = False,
    run_id: uuid.UUID | None = None,
    strict_targets: bool = True,
) -> RunResult:
    """Run one sync and return its result; on failure record a failed run, write nothing, raise.

    With ``strict_targets`` a target naming no row in scope is a ConfigError before anything is
    written; without it (triggers coalesced by the daemon) such targets are listed in the report's
    ``unknown_instances`` and the rest are synced.
    """
    run_id = run_id or uuid.uuid4()
    started = datetime.now(UTC)
    phases: defaultdict[str, float] = defaultdict(float)
    calls_before = Counter(client.calls)
    structlog.contextvars.bind_contextvars(run_id=str(run_id), trigger=trigger)
    try:
        async with pool.acquire() as conn:
            # A dry run writes nothing, so it need not wait for (or block) a real run.
            lock = (
                store.run_lock(conn, timeout=settings.database.lock_timeout_seconds)
                if not dry_run
                else contextlib.nullcontext()
            )
            async with lock:
                try:
                    result = await _run_locked(
                        conn,
                        client=client,
                        settings=settings,
                        run_id=run_id,
                        trigger=trigger,
                        started=started,
                        targets=targets,
                        dry_run=dry_run,
                        phases=phases,
                        strict_targets=strict_targets,
                        calls_before=calls_before,
                    )
                except (Exception, asyncio.CancelledError) as exc:
                    if not dry_run and not isinstance(exc, ConfigError):
                        calls = Counter(client.calls) - calls_before
                        await _record_failure(pool, run_id, trigger, started, exc, calls, targets)
                    raise
        return result
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        error = store.database_error(exc)
        log.error("sync.failed", error=str(error))
        raise error from None
    except CostSyncError as exc:
        log.error("sync.failed", error=str(exc))
        raise
    finally:
        structlog.contextvars.unbind_contextvars("run_id", "trigger")


async def _run_locked(
    conn: store.Conn,
    *,
    client: HostwindsClient,
    settings: Settings,
    run_id: uuid.UUID,
    trigger: str,
    started: datetime,
    targets: Sequence[str] | None,
    dry_run: bool,
    phases: defaultdict[str, float],
    strict_targets: bool,
    calls_before: Counter[str],
) -> RunResult:
    statuses = settings.sync.statuses
    managed = settings.hostwinds.managed

    # Instances first: parsing a large answer is the run's memory peak, best met without the rows.
    t0 = time.perf_counter()
    instances = await client.get_instances()
    phases["hostwinds"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = await store.read_rows(conn, statuses)
    phases["database"] += time.perf_counter() - t0

    unknown: dict[str, str] = {}
    if targets:
        t0 = time.perf_counter()
        chosen, unknown = resolve_targets(targets, await store.read_identities(conn), instances, statuses)
        if unknown and strict_targets:
            raise ConfigError("; ".join(f"--instance {t}: {why}" for t, why in unknown.items()))
        rows = [row for row in rows if row.id in chosen]
        phases["database"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    matches = match_rows(rows, instances)
    # Overridden rows need no Hostwinds price: ask only for the others.
    matched = {
        instance.serviceid: instance
        for row, instance in matches
        if instance is not None and (row.hostwinds_instance_id or "").strip() not in settings.overrides
    }
    phases["pricing"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    cycle_prices, price_lists = await asyncio.gather(
        _fetch_cycle_prices(client, sorted(matched), settings.hostwinds.max_concurrency),
        _fetch_price_lists(client, ((managed, i.disk_type) for i in matched.values())),
    )
    phases["hostwinds"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    outcomes = price_matched(
        matches,
        overrides=settings.overrides,
        cycle_prices=cycle_prices,
        price_lists=price_lists,
        managed=managed,
    )
    phases["pricing"] += time.perf_counter() - t0

    for outcome in outcomes:
        if isinstance(outcome.result, Unpriced):
            log.warning(
                "sync.unpriced",
                row_id=str(outcome.row.id),
                hostwinds_instance_id=outcome.row.hostwinds_instance_id,
                reason=outcome.result.reason.value,
                detail=outcome.result.detail,
            )

    draft = _report(
        run_id=run_id,
        trigger=trigger,
        started=started,
        outcomes=outcomes,
        updated=0,
        dry_run=dry_run,
        calls=Counter(client.calls) - calls_before,
        phases=phases,
        instances=targets,
    ).model_copy(update={"unknown_instances": unknown})

    if dry_run:
        final = draft
    else:
        t0 = time.perf_counter()
        async with conn.transaction():
            updated = await store.write_estimates(conn, run_id, outcomes, statuses=statuses)
            # The ledger row goes in last, with the final count, in the same transaction.
            final = draft.model_copy(update={"updated": updated, "finished_at": datetime.now(UTC)})
            await store.insert_run(conn, final, instances=targets)
        phases["database"] += time.perf_counter() - t0
        final = final.model_copy(update={"phase_seconds": {k: round(v, 4) for k, v in phases.items()}})

    log.info(
        "sync.finished",
        dry_run=dry_run,
        rows_in_scope=final.rows_in_scope,
        matched=final.matched,
        priced_by_source=final.priced_by_source,
        unchanged=final.unchanged,
        updated=final.updated,
        unpriced_by_reason=final.unpriced_by_reason,
        hostwinds_calls=final.hostwinds_calls,
        duration_seconds=round(final.duration_seconds, 3),
    )
    return RunResult(report=final, outcomes=outcomes)


async def _record_failure(
    pool: asyncpg.Pool,
    run_id: uuid.UUID,
    trigger: str,
    started: datetime,
    exc: BaseException,
    calls: Mapping[str, int],
    targets: Sequence[str] | None,
) -> None:
    """Record a failed run in its own transaction; best effort (the database may be the failure)."""
    message = str(exc) if isinstance(exc, CostSyncError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncio.CancelledError):
        message = "cancelled (shutdown) before the run could commit"
    report = RunReport(
        run_id=run_id,
        trigger=trigger,
        outcome="failed",
        started_at=started,
        finished_at=datetime.now(UTC),
        hostwinds_calls=dict(calls),
        error=message,
    )

    async def record() -> None:
        async with pool.acquire() as conn:
            await store.insert_run(conn, report, instances=targets)

    try:
        await asyncio.shield(asyncio.wait_for(record(), timeout=5))
    except (asyncpg.PostgresError, OSError, TimeoutError, DatabaseError, asyncio.CancelledError) as err:
        log.error("sync.failure_not_recorded", error=f"{type(err).__name__}: {err}")


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[tuple[HostwindsClient, asyncpg.Pool]]:
    """The Hostwinds client and the database pool a run needs; both closed on exit."""
    api_key = settings.hostwinds.api_key
    if api_key is None:
        raise ConfigError("setting hostwinds.api_key: required (set COST_SYNC_HOSTWINDS_API_KEY)")
    dsn = settings.database_dsn()
    hw = settings.hostwinds
    # local_address 0.0.0.0: Hostwinds keys are bound to an IPv4 allow-list, so never call over IPv6.
    transport = httpx.AsyncHTTPTransport(local_address="0.0.0.0", retries=0)  # noqa: S104
    async with httpx.AsyncClient(
        transport=transport,
        timeout=hw.timeout_seconds,
        limits=httpx.Limits(max_connections=hw.max_concurrency),
        headers={"User-Agent": f"cost-sync/{__version__}"},
    ) as http:
        pool = await create_pool(
            dsn,
            timeout=settings.database.connect_timeout_seconds,
        )
        try:
            yield (
                HostwindsClient(
                    http,
                    api_key.get_secret_value(),
                    url=hw.url,
                    requests_per_second=hw.requests_per_second or None,
                    max_concurrency=hw.max_concurrency,
                    attempts=hw.attempts,
                ),
                pool,
            )
        finally:
            await pool.close()
