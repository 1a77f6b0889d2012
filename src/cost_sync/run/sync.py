"""One run: fetch from Hostwinds what is needed, price every row in scope, write the changes at once.

This is the one place that orchestrates; it hands typed values from module to module and nothing
reaches back. A run asks ``get_billingcycle_prices`` only for services with no cached observation,
another fingerprint, a stale observation, or when forced; it stops asking when its time budget is
spent and reports the rows it did not reach as ``pending``. Answers are kept in the observation
cache as they arrive (committed within OBSERVATION_FLUSH_SECONDS), so a run that fails keeps
them; it still writes nothing to ``vps_instances`` but a ``failed`` ledger row, and raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import asyncpg
import structlog

from cost_sync.domain import flags, guard, matching, pricing
from cost_sync.domain.fingerprint import fingerprint
from cost_sync.domain.matching import (
    PriceListKey,
    resolve_targets,
)
from cost_sync.domain.models import (
    Cycle,
    Estimate,
    Fallback,
    HeldChange,
    Instance,
    Observation,
    PriceCacheReport,
    PriceCell,
    RowOutcome,
    RunReport,
    Unpriced,
    UnpricedReason,
    changed_states,
)
from cost_sync.domain.redact import redact
from cost_sync.errors import (
    ConfigError,
    CostSyncError,
    GuardRefused,
    HostwindsErrorEnvelope,
    HostwindsResponseError,
    HostwindsUnreadableError,
    RunServed,
    RunStalled,
)
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run import phases
from cost_sync.run.request import ONCE, RunRequest
from cost_sync.settings import Settings
from cost_sync.store.postgres import Store
from cost_sync.store.protocols import CachedPriceList, RunStore

__all__ = [
    "Progress",
    "RunResult",
    "SyncRun",
    "fleet_lease_wait",
    "run_once",
    "store_for",
]

log = structlog.get_logger("cost_sync.sync")

#: Answers kept in memory before they are committed to the observation cache.
OBSERVATION_BATCH = 200
#: The longest an answer waits in memory before it is committed: a killed run loses at most this.
OBSERVATION_FLUSH_SECONDS = 1.0
#: The longest error text a failed run's ledger row keeps.
_LEDGER_ERROR_MAX = 1000
#: While rows with no value wait for per-service prices the run cannot ask within this many
#: seconds, it stops asking after them and commits: those rows get the price list's provisional
#: estimate at once, and the next run (the daemon's catch-up) refines them.
PROVISIONAL_ASK_SECONDS = 10.0
#: Off a terminal, the least time between two ``sync.progress`` log lines.
PROGRESS_LOG_SECONDS = 10.0


@dataclass(frozen=True)
class RunResult:
    """A finished run: its report and the decision for every row in scope."""

    report: RunReport
    outcomes: list[RowOutcome] = field(default_factory=list)
    #: Changes the run proposed but held for a person instead of applying.
    held: list[HeldChange] = field(default_factory=list)
    #: Why the tenant attribution snapshot after this committed run could not be written.
    attribution_error: CostSyncError | None = None

    @property
    def changes(self) -> list[RowOutcome]:
        """Rows whose stored value this run changes (or, dry, would change); held ones excluded."""
        held = {h.row_id for h in self.held}
        return [o for o in self.outcomes if o.changed and o.row.id not in held]


@dataclass
class Progress:
    """How far a run's asking has got; read by the terminal bar, ``/runs/{id}`` and the log."""

    to_ask: int = 0
    asked: int = 0
    failed: int = 0
    started: float | None = None
    #: Called after every answer; None logs ``sync.progress`` at most every PROGRESS_LOG_SECONDS.
    listener: Callable[[Progress], None] | None = None
    _logged: float = 0.0

    def rate(self, now: float) -> float | None:
        """Services asked per second so far."""
        if self.started is None or now <= self.started or self.asked == 0:
            return None
        return self.asked / (now - self.started)

    def eta_seconds(self, now: float) -> float | None:
        """Seconds until every service is asked at the rate so far."""
        rate = self.rate(now)
        return None if rate is None else (self.to_ask - self.asked) / rate

    def as_json(self) -> dict[str, Any]:
        """The progress for ``/runs/{id}``."""
        now = time.monotonic()
        rate, eta = self.rate(now), self.eta_seconds(now)
        return {
            "to_ask": self.to_ask,
            "asked": self.asked,
            "failed": self.failed,
            "rate_per_second": None if rate is None else round(rate, 2),
            "eta_seconds": None if eta is None else round(eta, 1),
        }

    def tick(self, *, failed: bool = False) -> None:
        """Count one answer and tell whoever follows the run."""
        self.asked += 1
        self.failed += failed
        if self.listener is not None:
            self.listener(self)
            return
        now = time.monotonic()
        if now - self._logged >= PROGRESS_LOG_SECONDS or self.asked == self.to_ask:
            self._logged = now
            log.info("sync.progress", **self.as_json())


class _ObservationWriter:
    """Commits answers to the cache as they arrive, in batches of OBSERVATION_BATCH or every
    OBSERVATION_FLUSH_SECONDS (see :meth:`every`); a dry run keeps them in memory only."""

    def __init__(self, store: RunStore, *, enabled: bool) -> None:
        self._store = store
        self._enabled = enabled
        self._buffer: list[Observation] = []

    async def add(self, observation: Observation) -> None:
        self._buffer.append(observation)
        if len(self._buffer) >= OBSERVATION_BATCH:
            await self.flush()

    async def flush(self) -> None:
        batch, self._buffer = self._buffer, []
        if batch and self._enabled:
            await self._store.save_observations(batch)

    async def every(self, seconds: float) -> None:
        """Flush every ``seconds`` until cancelled; a failed flush is logged, the next one retries."""
        while True:
            await asyncio.sleep(seconds)
            try:
                # shield: cancelling the flusher mid-save must not lose the batch it took.
                await asyncio.shield(self.flush())
            except CostSyncError as exc:
                log.error("sync.observations_not_saved", error=str(exc))


class _Shared:
    """One object per distinct answer and fingerprint of a run: a fleet repeats a handful of each
    across thousands of services, and a cold run keeps every answer until it commits."""

    #: Distinct values shared at most; beyond that (a fleet of unique prices) values are not kept.
    LIMIT = 4096

    def __init__(self) -> None:
        self._prices: dict[tuple[tuple[Cycle, PriceCell], ...], Mapping[Cycle, PriceCell]] = {}
        self._texts: dict[str, str] = {}

    def prices(self, answer: Mapping[Cycle, PriceCell]) -> Mapping[Cycle, PriceCell]:
        """The answer as the cache keeps it (see pricing.cacheable_cell), read-only, shared."""
        cells = tuple((cycle, pricing.cacheable_cell(cell)) for cycle, cell in answer.items())
        shared = self._prices.get(cells)
        if shared is None:
            shared = MappingProxyType(dict(cells))
            if len(self._prices) < self.LIMIT:
                self._prices[cells] = shared
        return shared

    def text(self, value: str) -> str:
        """``value``, or the equal string seen before."""
        if len(self._texts) < self.LIMIT:
            return self._texts.setdefault(value, value)
        return self._texts.get(value, value)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a failed TaskGroup stands for: its first cost-sync error, else its first error."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if isinstance(e, CostSyncError)), leaves[0])


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


class SyncRun:
    """One sync run from lock to ledger row; :meth:`execute` runs it once."""

    def __init__(
        self,
        *,
        client: HostwindsClient,
        store: RunStore,
        settings: Settings,
        request: RunRequest = ONCE,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        #: What was asked (trigger, targets, dry run, full, accept changes, ...); read, never copied.
        self.request = request
        #: How long the run waits for the run lease (default: database.lock_timeout_seconds).
        self.lease_wait = (
            settings.database.lock_timeout_seconds if request.lease_wait is None else request.lease_wait
        )
        #: Whether the run's failure is in the ledger already.
        self._recorded = False
        self.targets = list(request.targets) if request.targets else None
        self.run_id = request.run_id or uuid.uuid4()
        self.progress = progress or Progress()
        self._clock = clock
        self._now = now
        self.started_at = now()
        #: Set when the run starts its work, after the lock: waiting for another run costs no budget.
        self._deadline = float("inf")  # float-ok: seconds
        self.phases: defaultdict[str, float] = defaultdict(float)
        self._calls_before = Counter(client.calls)
        self._shared = _Shared()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to phase ``name`` (hostwinds, database, pricing)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] += time.perf_counter() - t0

    @property
    def calls(self) -> dict[str, int]:
        """Hostwinds calls this run made, per action."""
        return dict(sorted((Counter(self.client.calls) - self._calls_before).items()))

    async def execute(self) -> RunResult:
        """Run once; on failure record a failed run, write nothing to ``vps_instances``, raise.

        The failure is recorded in the ledger; saying it (once) is the caller's: the command line
        prints it, the daemon logs ``sync.failed``.
        """
        structlog.contextvars.bind_contextvars(run_id=str(self.run_id), trigger=self.request.trigger)
        try:
            if self.request.dry_run:
                # A dry run writes nothing, so it need not wait for (or block) a real run.
                return await self._locked(contextlib.nullcontext())
            # In the ledger from the moment it starts: a run killed while it waits or runs is seen.
            await self.store.begin_run(self.run_id, self.request.trigger, self.started_at, self.targets)
            lease = self.store.lock(
                timeout=self.lease_wait, run_id=self.run_id, served_since=self.request.served_since
            )
            try:
                return await self._locked(lease)
            except (RunServed, ConfigError):
                # Nothing a ledger keeps: a fire another replica served, or arguments refused.
                await asyncio.shield(self.store.discard_run(self.run_id))
                raise
            except (Exception, asyncio.CancelledError) as exc:
                # Failed before it held the lease (no lease within the wait, the database): say why.
                if not self._recorded:
                    await self._record_failure(exc)
                raise
        finally:
            structlog.contextvars.unbind_contextvars("run_id", "trigger")

    async def _locked(self, lease: contextlib.AbstractAsyncContextManager[None]) -> RunResult:
        async with lease:
            try:
                result = await self._run()
            except (Exception, asyncio.CancelledError) as exc:
                if not self.request.dry_run and not isinstance(exc, ConfigError):
                    # Under the lease: nobody marks the run abandoned while its failure is written.
                    await self._record_failure(exc)
                raise
            # Committed: nothing below may turn the run into a failed one. Still under the
            # run lease, so the snapshot shows exactly this run's prices.
            return await self._after_commit(result)

    async def _run(self) -> RunResult:
        """List, match, decide, fetch, price, guard, commit: each step one method or pure function."""
        settings = self.settings
        self._deadline = self._clock() + settings.sync.max_run_seconds
        listed = await self._list()
        with self.phase("pricing"):
            matched = phases.match(listed, settings.overrides)
        with self.phase("database"):
            last = await self.store.last_good_run()
        # The last good run the guards compare with; none when the run accepts every change.
        guarded = None if self.request.accept_changes else last
        self._refuse_if(phases.unmatched_refusal(matched, guarded, settings.guard))
        decision = await self._decide(matched)
        with self.phase("hostwinds"):
            fetched = await self._fetch(matched.wanted, decision)
        self._fail_without_progress(fetched)
        # Only a whole-fleet run asks every price list the plans in use are on.
        if self.targets is None:
            self._refuse_if(phases.plans_refusal(guarded, fetched, settings.guard))
        with self.phase("pricing"):
            priced = phases.price(listed, matched, decision.plan, fetched, settings)
        held = await self._guard(priced.outcomes)
        self._log_outcomes(priced, fetched)
        raised = phases.run_flags(listed, matched, fetched, priced.outcomes, held, settings)
        for flag in raised:
            log.warning("sync.flagged", kind=flag.kind, message=flag.message)
        cache = phases.cache_report(decision.plan, fetched)
        draft = self._report(priced.outcomes, unknown=listed.unknown, cache=cache, held=held).model_copy(
            update={
                "warnings": [flag.message for flag in raised],
                "warning_kinds": [flag.kind for flag in raised],
                "rows_sharing_instance": sum(len(r) for r in matched.shared.values()),
                "plans_in_use": priced.plans_in_use,
                "plan_names": priced.names.counts(),
            }
        )
        final = draft if self.request.dry_run else await self._commit(draft, priced.outcomes, held)
        self._log_finished(final)
        return RunResult(report=final, outcomes=priced.outcomes, held=held)

    async def _list(self) -> phases.Listed:
        """Hostwinds' instances, then the rows in scope (the targets' only, when the run names some)."""
        statuses = self.settings.sync.statuses
        # Instances first: parsing a large answer is the run's memory peak, best met without the rows.
        with self.phase("hostwinds"):
            listed = await self.client.get_instances()
        instances, conflicting = flags.conflicting_instances(listed)
        with self.phase("database"):
            rows = await self.store.read_rows(statuses)
        unused = flags.unused_overrides(self.settings.overrides, rows)
        unknown: dict[str, str] = {}
        if self.targets:
            with self.phase("database"):
                identities = await self.store.read_identities()
            chosen, unknown = resolve_targets(self.targets, identities, instances, statuses)
            if unknown and self.request.strict_targets:
                raise ConfigError("; ".join(f"--instance {t}: {why}" for t, why in unknown.items()))
            rows = [row for row in rows if row.id in chosen]
        return phases.Listed(
            instances=instances,
            instances_listed=len(listed),
            conflicting=conflicting,
            shared_uuids=matching.shared_server_uuids(instances),
            rows=rows,
            unused=unused,
            unknown=unknown,
        )

    async def _decide(self, matched: phases.Matched) -> phases.Decision:
        """Read the cached observations of the wanted services and decide which to ask."""
        with self.phase("database"):
            observations = await self.store.read_observations(sorted(matched.wanted))
        return phases.decide(
            matched,
            observations,
            self.settings,
            now=self._now(),
            full=self.request.full,
            provisional_seconds=PROVISIONAL_ASK_SECONDS,
        )

    async def _guard(self, outcomes: Sequence[RowOutcome]) -> list[HeldChange]:
        """The changes held for a person, compared with the rows' history; logged once per run."""
        guard_settings = self.settings.guard
        references: dict[uuid.UUID, guard.Reference] = {}
        if not self.request.accept_changes:
            # Only changed Hostwinds prices can be held: their rows' history is all that is read.
            with self.phase("database"):
                references = await self.store.price_references(
                    phases.changed_hostwinds_prices(outcomes),
                    window_seconds=guard_settings.drift_window_days * 86400,
                )
        held = phases.hold(outcomes, references, guard_settings, accept=self.request.accept_changes)
        if held:
            # Once per run, not per row: a glitch at Hostwinds can hold the whole fleet.
            log.warning(
                "sync.changes_held",
                held=len(held),
                max_change_ratio=str(guard_settings.max_change_ratio),
                examples=[
                    {"row_id": str(h.row_id), "old": str(h.old), "proposed": str(h.proposed.monthly)}
                    for h in held[:5]
                ],
                note="review with `cost-sync held`, apply with `cost-sync approve`",
            )
        return held

    def _log_outcomes(self, priced: phases.Priced, fetched: phases.Fetched) -> None:
        """Log every unpriced row, every distinct plan-name disagreement and the rows left pending."""
        for outcome in priced.outcomes:
            if isinstance(outcome.result, Unpriced) and outcome.result.reason is not UnpricedReason.PENDING:
                log.warning(
                    "sync.unpriced",
                    row_id=str(outcome.row.id),
                    hostwinds_instance_id=outcome.row.hostwinds_instance_id,
                    reason=outcome.result.reason.value,
                    detail=outcome.result.detail,
                )
        for product_id, product_name, plan_name in priced.names.disagreements:
            # Logged once per distinct pair: a wrong plan_key would otherwise log every instance.
            log.warning(
                "sync.plan_name_disagrees",
                plan_key=self.settings.hostwinds.plan_key,
                product_id=product_id,
                product_name=product_name,
                plan_name=plan_name,
                note="priced anyway; `cost-sync doctor` shows which plan_key the data supports",
            )
        if fetched.pending:
            log.info(
                "sync.pending",
                services=len(fetched.pending),
                max_run_seconds=self.settings.sync.max_run_seconds,
                note="the next run continues where this one stopped",
            )

    async def _commit(
        self, draft: RunReport, outcomes: Sequence[RowOutcome], held: Sequence[HeldChange]
    ) -> RunReport:
        """Write the changes, the held ones and the ledger row in one transaction."""
        with self.phase("database"):
            final = await self.store.commit_run(
                self.run_id,
                outcomes,
                statuses=self.settings.sync.statuses,
                finish=lambda updated: draft.model_copy(
                    update={"updated": updated, "finished_at": self._now()}
                ),
                held=held,
                decided=[
                    o.row.id
                    for o in outcomes
                    if not (isinstance(o.result, Unpriced) and o.result.reason is UnpricedReason.PENDING)
                ],
                row_states=changed_states(outcomes),
            )
        return final.model_copy(update={"phase_seconds": self._phase_seconds()})

    def _log_finished(self, final: RunReport) -> None:
        log.info(
            "sync.finished",
            dry_run=self.request.dry_run,
            rows_in_scope=final.rows_in_scope,
            matched=final.matched,
            priced_by_source=final.priced_by_source,
            unchanged=final.unchanged,
            updated=final.updated,
            held=final.held,
            unpriced_by_reason=final.unpriced_by_reason,
            warnings=len(final.warnings),
            hostwinds_calls=final.hostwinds_calls,
            price_cache=final.price_cache.model_dump(),
            plan_names=final.plan_names,
            duration_seconds=round(final.duration_seconds, 3),
        )

    def _fail_without_progress(self, fetched: phases.Fetched) -> None:
        """Fail a run that had services to ask and asked none: its budget was gone before asking.

        Reporting every row pending would repeat forever, each run stopping at the same place.
        """
        if not fetched.pending or fetched.answers or fetched.failed:
            return
        budget = self.settings.sync.max_run_seconds
        spent = self._clock() - (self._deadline - budget)
        raise RunStalled(
            f"no progress: the run's time budget (sync.max_run_seconds = {budget:g} s) was spent "
            f"before any of the {len(fetched.pending)} services to ask could be asked for cycle prices "
            f"({spent:.1f} s went to get_instances, the rows and the price lists); nothing was written. "
            "Raise sync.max_run_seconds above the time get_instances takes"
        )

    def _refuse_if(self, refusal: guard.Refusal | None) -> None:
        if refusal is not None:
            log.error("sync.guard_refused", seen=refusal.seen, lost=refusal.lost, ratio=str(refusal.ratio))
            raise GuardRefused(refusal.message)

    async def _after_commit(self, result: RunResult) -> RunResult:
        """With ``[attribution] enabled``, write the tenant attribution snapshot of a committed run.

        A failure is logged as ``attribution.failed`` and handed back in the result, never raised.
        """
        if self.request.dry_run or not self.settings.attribution.enabled:
            return result
        try:
            await self.store.write_attribution(self.settings, self.run_id)
        except CostSyncError as exc:
            log.error("attribution.failed", error=str(exc))
            return replace(result, attribution_error=exc)
        return result

    async def _fetch(self, wanted: Mapping[int, Instance], decision: phases.Decision) -> phases.Fetched:
        """The price lists and the planned cycle prices, asked side by side until the budget is spent.

        A TaskGroup: when any fetch fails the run, the others are cancelled at once, so nothing
        keeps calling Hostwinds after the run has failed and released its lock.
        """
        fetched = phases.Fetched()
        managed = self.settings.hostwinds.managed
        keys = sorted({(managed, i.disk_type) for i in wanted.values()}, key=lambda k: (k[0], k[1] or ""))
        order, cold = decision.order, decision.cold
        queue = iter(order)
        writer = _ObservationWriter(self.store, enabled=not self.request.dry_run)
        self.progress.to_ask = len(order)
        self.progress.started = time.monotonic()

        # Rows with no value that the price lists can estimate: once the lists are in, asking
        # stops after PROVISIONAL_ASK_SECONDS so that the run commits their estimates early.
        deadline = self._deadline
        lists_left = len(keys)
        started = self._clock() if cold else 0.0

        def lists_arrived() -> None:
            nonlocal deadline
            if cold and phases.list_prices_any(cold, fetched.price_lists, self.settings):
                deadline = min(deadline, started + PROVISIONAL_ASK_SECONDS)

        async def price_list(key: PriceListKey) -> None:
            nonlocal lists_left
            plan_key = self.settings.hostwinds.plan_key
            plans = await self.client.get_price_list(managed=key[0], drive_type=key[1], plan_key=plan_key)
            fetched.price_lists[key] = plans
            lists_left -= 1
            if lists_left == 0:
                lists_arrived()
            if not self.request.dry_run:
                # Kept for `explain`, committed now as observations are (a failed run keeps it).
                await self.store.save_price_list(
                    CachedPriceList(key[0], key[1], plan_key, plans, self._now(), self.run_id)
                )

        async def worker() -> None:
            for serviceid in queue:
                if self._clock() >= deadline:
                    return
                await self._ask(serviceid, wanted[serviceid], fetched, writer)

        workers = max(1, min(self.settings.hostwinds.max_concurrency, len(order)))
        # Apart from the group: it runs until the asking ends, whichever way.
        flusher = asyncio.create_task(writer.every(OBSERVATION_FLUSH_SECONDS))
        try:
            async with asyncio.TaskGroup() as group:
                for key in keys:
                    group.create_task(price_list(key))
                for _ in range(workers if order else 0):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None
        finally:
            flusher.cancel()
            # Every answer received is kept, also when the run fails or is cancelled.
            await self._flush(writer)
            await asyncio.wait({flusher})
        fetched.pending = [sid for sid in order if sid not in fetched.answers and sid not in fetched.failed]
        return fetched

    async def _ask(
        self, serviceid: int, instance: Instance, fetched: phases.Fetched, writer: _ObservationWriter
    ) -> None:
        """Ask one service's cycle prices; an error answer or unreadable body fails that row alone."""
        try:
            prices = await self.client.get_billingcycle_prices(serviceid)
        except (HostwindsResponseError, HostwindsUnreadableError) as exc:
            # An error envelope, a body of the wrong shape, an ambiguous object or a body that is
            # not JSON (an HTML page) concerns this service alone: its rows fall back to the price list.
            kind = (
                Fallback.CYCLE_PRICES_ERROR
                if isinstance(exc, HostwindsErrorEnvelope)
                else Fallback.CYCLE_PRICES_UNREADABLE
            )
            fetched.failed[serviceid] = (kind, str(exc))
            log.warning(
                "sync.cycle_prices_unavailable",
                serviceid=serviceid,
                reason=str(exc),
                fallback=kind.value,
                note="priced from the price list when it has the plan and cycle",
            )
            self.progress.tick(failed=True)
            return
        observation = Observation(
            serviceid=serviceid,
            prices=self._shared.prices(prices),
            fingerprint=self._shared.text(fingerprint(instance, managed=self.settings.hostwinds.managed)),
            observed_at=self._now(),
            run_id=self.run_id,
        )
        fetched.answers[serviceid] = observation
        await writer.add(observation)
        self.progress.tick()

    async def _flush(self, writer: _ObservationWriter) -> None:
        try:
            # shield: a cancelled run still commits what it has received, within a few seconds.
            await asyncio.shield(asyncio.wait_for(writer.flush(), timeout=5))
        except (CostSyncError, TimeoutError) as exc:
            log.error("sync.observations_not_saved", error=str(exc) or type(exc).__name__)

    def _phase_seconds(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.phases.items()}

    def _report(
        self,
        outcomes: Sequence[RowOutcome],
        *,
        unknown: dict[str, str],
        cache: PriceCacheReport,
        held: Sequence[HeldChange] = (),
    ) -> RunReport:
        held_ids = {h.row_id for h in held}
        estimates = [o.result for o in outcomes if isinstance(o.result, Estimate)]
        unpriced = [o.result for o in outcomes if isinstance(o.result, Unpriced)]
        changed = sum(1 for o in outcomes if o.changed and o.row.id not in held_ids)
        before = sum((o.row.approximate_cost or Decimal(0) for o in outcomes), Decimal("0.00"))
        # A held row keeps its old value, so the total after is what the table will hold.
        after = sum(
            (
                o.result.monthly
                if isinstance(o.result, Estimate) and o.row.id not in held_ids
                else (o.row.approximate_cost or Decimal(0))
                for o in outcomes
            ),
            Decimal("0.00"),
        )
        return RunReport(
            run_id=self.run_id,
            trigger=self.request.trigger,
            outcome="succeeded",
            dry_run=self.request.dry_run,
            started_at=self.started_at,
            finished_at=self._now(),
            rows_in_scope=len(outcomes),
            matched=sum(1 for o in outcomes if o.instance is not None),
            priced_by_source=_count(e.source.value for e in estimates),
            provisional=sum(1 for e in estimates if e.provisional),
            unchanged=len(estimates) - changed - len(held),
            changed=changed,
            held=len(held),
            updated=0,
            unpriced_by_reason=_count(u.reason.value for u in unpriced),
            hostwinds_calls=self.calls,
            total_before=before,
            total_after=after,
            phase_seconds=self._phase_seconds(),
            instances=self.targets,
            unknown_instances=unknown,
            price_cache=cache,
        )

    async def _record_failure(self, exc: BaseException) -> None:
        """Record a failed run in its own transaction; best effort (the database may be the failure)."""
        message = str(exc) if isinstance(exc, CostSyncError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, asyncio.CancelledError):
            message = "cancelled (shutdown) before the run could commit"
        # A database error's DETAIL may quote a value that came from Hostwinds: bound and redact it,
        # the key in every spelling included.
        key = self.settings.hostwinds.api_key
        message = redact(
            message, limit=_LEDGER_ERROR_MAX, secrets=(key.get_secret_value(),) if key is not None else ()
        )
        report = RunReport(
            run_id=self.run_id,
            trigger=self.request.trigger,
            outcome="failed",
            started_at=self.started_at,
            finished_at=self._now(),
            hostwinds_calls=self.calls,
            instances=self.targets,
            error=message,
        )
        self._recorded = True
        try:
            await asyncio.shield(self.store.record_run(report))
        except CostSyncError as err:
            log.error("sync.failure_not_recorded", error=str(err))
        except asyncio.CancelledError:
            # Cancelled again while recording: say so, and let the cancellation go on.
            log.error("sync.failure_not_recorded", error="cancelled while recording the failure")
            raise


async def run_once(
    *,
    client: HostwindsClient,
    settings: Settings,
    pool: asyncpg.Pool | None = None,
    store: RunStore | None = None,
    request: RunRequest = ONCE,
    progress: Progress | None = None,
    now: Callable[[], datetime] | None = None,
) -> RunResult:
    """Run one sync as ``request`` asks (by default a plain ``--once``) and return its result; on
    failure record a failed run, write nothing, raise.

    ``request.full`` asks every service of the run afresh (``--full``; ``resync --instance`` for
    the named ones). With ``request.strict_targets`` a target naming no row in scope is a
    ConfigError before anything is written; without it (triggers coalesced by the daemon) such
    targets are listed in the report's ``unknown_instances`` and the rest are synced. ``now`` is
    the wall clock the run dates its work with (tests move it). The run waits
    ``request.lease_wait`` seconds for the run lease (default ``database.lock_timeout_seconds``);
    with ``request.served_since`` (a scheduled fire's time) it raises RunServed, writing nothing,
    once a whole-fleet run took the lease since then.
    """
    if store is None:
        if pool is None:
            raise TypeError("run_once needs a pool or a store")
        store = store_for(pool, settings)
    run = SyncRun(
        client=client,
        store=store,
        settings=settings,
        request=request,
        progress=progress,
        now=now or (lambda: datetime.now(UTC)),
    )
    return await run.execute()


def fleet_lease_wait(settings: Settings) -> float:
    """How long a daemon's run waits for the lease: another replica's run ends within its budget
    (``sync.max_run_seconds``), its write's wait (``database.lock_timeout_seconds``) and, when its
    process died, the lease's expiry (``database.lease_seconds``)."""
    db = settings.database
    return settings.sync.max_run_seconds + db.lock_timeout_seconds + db.lease_seconds


def store_for(pool: asyncpg.Pool, settings: Settings) -> Store:
    """The run store on ``pool`` with ``[database]``'s lock and lease settings."""
    return Store(
        pool,
        write_lock_timeout=settings.database.lock_timeout_seconds,
        lease_seconds=settings.database.lease_seconds,
        # A run waits for the lease at most this long: a 'running' row older without it is dead.
        stale_wait_seconds=2 * fleet_lease_wait(settings) + 60,
    )
