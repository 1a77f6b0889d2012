"""The long-running daemon: scheduled syncs, the admin HTTP endpoint, coalesced triggers, clean stop.

Wiring only: runs are :func:`cost_sync.run.sync.run_once`. Inside the process one run happens at a
time. Triggers that arrive while a run is in flight coalesce: targeted resyncs into one follow-up
covering their union, whole-fleet triggers into another, and the targeted one goes first, so ops
get the price they asked for within about one run's budget. While a whole-fleet run leaves rows
pending (its time budget ran out), the next one starts at once. Across processes (replicas) the
run lease serialises: a run waits for it up to one run budget; a scheduled fire that another
replica's whole-fleet run served (it took the lease at or after the fire's time) is skipped, so the
fleet asks Hostwinds once per fire; an idle replica that finds a run's lease expired with the run
unfinished (its process was killed) takes over with a whole-fleet run, which marks it abandoned.
On SIGTERM/SIGINT the scheduler stops, an in-flight run gets ``shutdown_grace_seconds`` to finish
and is then cancelled (its transaction rolls back), and the HTTP endpoint closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cost_sync import __version__, build_revision
from cost_sync.daemon import schedule
from cost_sync.domain.matching import resolve_targets
from cost_sync.domain.models import Instance, RunReport, storable_text
from cost_sync.errors import (
    ConfigError,
    CostSyncError,
    DatabaseError,
    HostwindsAuthError,
    RunServed,
    RunStalled,
)
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.sync import Progress, fleet_lease_wait, run_once, store_for
from cost_sync.runtime.httpserve import AppServer
from cost_sync.settings import Settings
from cost_sync.store.db import database_errors
from cost_sync.store.migrate import require_schema
from cost_sync.store.trust import TrustStore

log = structlog.get_logger("cost_sync.daemon")

#: Finished runs kept for ``GET /runs/{id}`` and ``GET /runs``.
RUNS_KEPT = 500
#: ``GET /runs`` page size when ``limit`` is not given.
RUNS_PAGE = 20
MAX_INSTANCES_PER_REQUEST = 1000
#: The longest id a resync may name: hostwinds_instance_id is VARCHAR(255).
MAX_INSTANCE_ID_LENGTH = 255
#: The largest POST /resync body read (1000 ids of 255 characters fit, with quoting).
MAX_RESYNC_BODY_BYTES = 512 * 1024


def _bad_instance_id(value: object) -> str | None:
    """Why ``value`` cannot name a row in a resync (None: it can)."""
    if not isinstance(value, str) or not value.strip():
        return "ids must be non-empty strings"
    if len(value) > MAX_INSTANCE_ID_LENGTH:
        return f"an id is longer than {MAX_INSTANCE_ID_LENGTH} characters"
    if not storable_text(value):
        # PostgreSQL cannot hold it: the run would fail (with every target merged into it).
        return "an id contains a NUL or invalid Unicode"
    return None


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class RunState(StrEnum):
    """Where a requested run is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: A scheduled (or takeover) run another replica served: nothing was run or recorded.
    SKIPPED = "skipped"


@dataclass
class RunRecord:
    """One run as the daemon tracks it: what was asked, where it is, how it ended."""

    run_id: uuid.UUID
    trigger: str
    instances: list[str] | None
    #: Ask every service of the run afresh instead of using cached prices.
    full: bool = False
    #: Apply changes over [guard] max_change_ratio instead of holding them (named resyncs do).
    accept_changes: bool = False
    #: A scheduled fire's time: not run when a whole-fleet run took the lease since (a replica's).
    served_since: datetime | None = None
    state: RunState = RunState.QUEUED
    requests: int = 1
    report: RunReport | None = None
    error: str | None = None
    progress: Progress = field(default_factory=Progress, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def merge(self, instances: list[str] | None, *, full: bool, accept_changes: bool = False) -> None:
        """Widen this queued run to also cover ``instances`` (None: the whole fleet)."""
        self.requests += 1
        # Asked for by more than one trigger: run it whatever another replica served.
        self.served_since = None
        self.full = self.full or full
        self.accept_changes = self.accept_changes or accept_changes
        if self.instances is None or instances is None:
            self.instances = None
        else:
            self.instances += [i for i in instances if i not in self.instances]

    def as_json(self) -> dict[str, Any]:
        """The record for ``GET /runs/{id}``."""
        return {
            "run_id": str(self.run_id),
            "trigger": self.trigger,
            "state": self.state.value,
            "instances": self.instances,
            "requests": self.requests,
            "full": self.full,
            "progress": self.progress.as_json() if self.state is RunState.RUNNING else None,
            "error": self.error,
            "report": self.report.model_dump(mode="json") if self.report else None,
        }


Execute = Callable[[RunRecord], Awaitable[RunReport]]


class Runner:
    """Runs one sync at a time; coalesces triggers into a targeted and a whole-fleet follow-up."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute
        self._targeted: RunRecord | None = None
        self._fleet: RunRecord | None = None
        self._current: RunRecord | None = None
        self._driver: asyncio.Task[None] | None = None
        self._closed = False
        self.runs: OrderedDict[uuid.UUID, RunRecord] = OrderedDict()

    @property
    def busy(self) -> bool:
        """True while a run is in flight or queued."""
        return self._current is not None or self._targeted is not None or self._fleet is not None

    @property
    def current(self) -> RunRecord | None:
        """The run in flight, if any."""
        return self._current

    def request(
        self,
        instances: list[str] | None,
        trigger: str,
        *,
        full: bool = False,
        accept_changes: bool = False,
        served_since: datetime | None = None,
    ) -> RunRecord:
        """Queue a run (or widen the queued one of its kind); return the record that will carry it out."""
        if self._closed:
            raise CostSyncError("the daemon is shutting down")
        queued = self._fleet if instances is None else self._targeted
        if queued is None:
            queued = RunRecord(
                uuid.uuid4(),
                trigger,
                list(instances) if instances else None,
                full=full,
                accept_changes=accept_changes,
                served_since=served_since,
            )
            if instances is None:
                self._fleet = queued
            else:
                self._targeted = queued
            self._remember(queued)
        else:
            queued.merge(instances, full=full, accept_changes=accept_changes)
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name="cost-sync-runner")
        return queued

    def get(self, run_id: uuid.UUID) -> RunRecord | None:
        """A known run by id."""
        return self.runs.get(run_id)

    def newest(self, limit: int, before: uuid.UUID | None = None) -> tuple[list[RunRecord], bool]:
        """Up to ``limit`` known runs, newest first, older than ``before``; and whether more follow."""
        records: list[RunRecord] = []
        seen = before is None
        for record in reversed(self.runs.values()):
            if not seen:
                seen = record.run_id == before
                continue
            if len(records) == limit:
                return records, True
            records.append(record)
        return records, False

    def _remember(self, record: RunRecord) -> None:
        self.runs[record.run_id] = record
        while len(self.runs) > RUNS_KEPT:
            self.runs.popitem(last=False)

    def _next(self) -> RunRecord | None:
        # Targeted resyncs first: ops asked for those prices and are waiting for them.
        record: RunRecord | None
        if self._targeted is not None:
            record, self._targeted = self._targeted, None
        else:
            record, self._fleet = self._fleet, None
        return record

    async def _drive(self) -> None:
        while (record := self._next()) is not None:
            self._current = record
            record.state = RunState.RUNNING
            try:
                record.report = await self._execute(record)
                record.state = RunState.SUCCEEDED
            except asyncio.CancelledError:
                record.state, record.error = RunState.FAILED, "cancelled at shutdown; nothing was written"
                raise
            except RunServed as exc:
                record.state, record.error = RunState.SKIPPED, str(exc)
                log.info("sync.served_elsewhere", run_id=str(record.run_id), served_by=exc.served_by)
            except CostSyncError as exc:
                record.state, record.error = RunState.FAILED, str(exc)
                log.error("sync.failed", run_id=str(record.run_id), trigger=record.trigger, error=str(exc))
            except Exception as exc:  # a bug must not stop the daemon: log it, fail the run
                log.exception("daemon.run_crashed", run_id=str(record.run_id))
                record.state, record.error = RunState.FAILED, f"internal error: {type(exc).__name__}"
            finally:
                self._current = None
                record.done.set()
            self._catch_up(record)

    def _catch_up(self, record: RunRecord) -> None:
        """After a whole-fleet run that left rows pending and made progress, queue the next one now."""
        report = record.report
        if self._closed or report is None or record.instances is not None:
            return
        cache = report.price_cache
        if cache.pending and cache.asked:
            log.info("daemon.catch_up", pending=cache.pending, after_run=str(record.run_id))
            self.request(None, "catchup")

    async def close(self, grace: float) -> bool:
        """Refuse new runs, drop the queued ones, give the in-flight run ``grace`` s; True if it finished."""
        self._closed = True
        for queued in (self._targeted, self._fleet):
            if queued is not None:
                queued.state, queued.error = RunState.FAILED, "not started: the daemon stopped"
                queued.done.set()
        self._targeted = self._fleet = None
        if self._driver is None or self._driver.done():
            return True
        done, _ = await asyncio.wait({self._driver}, timeout=grace)
        if done:
            return True
        self._driver.cancel()
        await asyncio.gather(self._driver, return_exceptions=True)
        return False


class _HostwindsRequests(Collector):
    """Exposes the client's request counters at scrape time."""

    def __init__(self, client: HostwindsClient) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "cost_sync_hostwinds_requests",
            "HTTP requests sent to Hostwinds, by action and outcome.",
            labels=["action", "outcome"],
        )
        for (action, outcome), count in sorted(self._client.requests.items()):
            family.add_metric([action, outcome], count)
        yield family


class _AgeSince(Collector):
    """A gauge of the seconds since ``since``, computed at scrape time (a clock read then, not a
    value left by the last run); ``unknown`` is exposed while ``since`` is None (None: no sample)."""

    def __init__(self, name: str, documentation: str, *, unknown: float | None) -> None:
        self._name = name
        self._documentation = documentation
        self._unknown = unknown
        #: The time the age is counted from, as the last run left it.
        self.since: datetime | None = None

    def collect(self) -> Iterator[Metric]:
        if self.since is not None:
            age: float | None = max(0.0, (datetime.now(UTC) - self.since).total_seconds())
        else:
            age = self._unknown
        if age is not None:
            yield GaugeMetricFamily(self._name, self._documentation, value=age)


class _RunProgress(Collector):
    """How far the run in flight has got asking Hostwinds for cycle prices; zeros between runs."""

    def __init__(self, current: Callable[[], RunRecord | None]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        record = self._current()
        progress = record.progress if record is not None else Progress()
        for name, value, text in (
            ("to_ask", progress.to_ask, "Services the run in flight has to ask for cycle prices."),
            ("asked", progress.asked, "Services the run in flight has asked so far."),
            ("failed", progress.failed, "Services whose ask failed in the run in flight."),
        ):
            yield GaugeMetricFamily(f"cost_sync_run_progress_{name}", text + " 0 between runs.", value=value)


class Metrics:
    """The daemon's Prometheus metrics, in a registry of its own."""

    def __init__(self, client: HostwindsClient) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.in_progress = Gauge("cost_sync_run_in_progress", "1 while a run is in flight.", registry=r)
        self.cache_services = Counter(
            "cost_sync_price_cache_services",
            "Services per run by what the price cache did: hit, asked, failed, pending.",
            ["result"],
            registry=r,
        )
        self.cache_asks = Counter(
            "cost_sync_price_cache_asks",
            "Services asked for cycle prices, by reason: new, changed, stale, forced.",
            ["reason"],
            registry=r,
        )
        self.oldest_observation = _AgeSince(
            "cost_sync_price_observation_oldest_age_seconds",
            "Age of the oldest cached get_billingcycle_prices answer a row in scope relies on.",
            unknown=None,
        )
        r.register(self.oldest_observation)
        self.runs = Counter(
            "cost_sync_runs", "Runs by trigger and outcome.", ["trigger", "outcome"], registry=r
        )
        self.last_success = Gauge(
            "cost_sync_last_success_timestamp_seconds", "When the last successful run finished.", registry=r
        )
        self.duration = Histogram(
            "cost_sync_run_duration_seconds",
            "Wall time of runs.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.rows_updated = Counter("cost_sync_rows_updated", "vps_instances rows updated.", registry=r)
        self.by_source = Gauge(
            "cost_sync_instances_priced",
            "Rows priced in the last full run, by price source.",
            ["source"],
            registry=r,
        )
        self.by_reason = Gauge(
            "cost_sync_instances_unpriced",
            "Rows left unpriced in the last full run, by reason.",
            ["reason"],
            registry=r,
        )
        build = Gauge(
            "cost_sync_build_info",
            "The running cost-sync build: its version and the git revision it was built from; always 1.",
            ["version", "revision"],
            registry=r,
        )
        build.labels(version=__version__, revision=build_revision()).set(1)
        self.admin_requests = Counter(
            "cost_sync_admin_requests",
            "Requests to the admin HTTP endpoint, by route, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.admin_duration = Histogram(
            "cost_sync_admin_request_duration_seconds",
            "Time the admin HTTP endpoint took to answer, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.tokens_rejected = Counter(
            "cost_sync_admin_tokens_rejected",
            "Admin requests refused for a missing or wrong bearer token, by reason.",
            ["reason"],
            registry=r,
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        ProcessCollector(registry=r)
        r.register(_HostwindsRequests(client))
        self.fleet_total = Gauge(
            "cost_sync_fleet_monthly_usd",
            "Sum of approximate_cost over the rows in scope after the last run.",
            registry=r,
        )
        self.warnings = Gauge(
            "cost_sync_run_warnings",
            "Warnings the last successful run raised, by kind (mostly_unpriced, nothing_matched, "
            "cycle_prices_unavailable_everywhere, price_list_row_unreadable, ...).",
            ["kind"],
            registry=r,
        )
        self._warning_kinds = {"mostly_unpriced", "nothing_matched", "cycle_prices_unavailable_everywhere"}
        for kind in self._warning_kinds:
            self.warnings.labels(kind=kind).set(0)
        self.held = Gauge(
            "cost_sync_changes_held",
            "Changes held for approval ([guard] max_change_ratio) after the last run.",
            registry=r,
        )
        self.held_oldest = _AgeSince(
            "cost_sync_changes_held_oldest_age_seconds",
            "Age of the oldest change held for approval after the last run (0: nothing held).",
            unknown=0.0,
        )
        r.register(self.held_oldest)
        self.failed_in_a_row = Gauge(
            "cost_sync_runs_failed_consecutive",
            "Runs that failed one after another since the last successful run (0 after a success).",
            registry=r,
        )
        self.key_refused = Gauge(
            "cost_sync_hostwinds_key_refused",
            "1 when the last run failed because Hostwinds refused the API key, else 0.",
            registry=r,
        )
        self.schedule_interval = Gauge(
            "cost_sync_schedule_interval_seconds",
            "The longest gap between the upcoming fires of [sync] schedule.",
            registry=r,
        )
        self.max_price_age = Gauge(
            "cost_sync_max_price_age_seconds",
            "[sync] max_price_age_seconds: how old a cached cycle price may be before it is asked again.",
            registry=r,
        )

    def follow(self, current: Callable[[], RunRecord | None]) -> None:
        """Expose the progress of the run ``current()`` returns (None: no run in flight)."""
        self.registry.register(_RunProgress(current))

    def failed(self, trigger: str, error: BaseException, *, full: bool) -> None:
        """Count one failed run, and whether it failed because Hostwinds refused the key."""
        self.observe(trigger, None, full=full)
        self.key_refused.set(1 if _refused_key(error) else 0)

    def observe(self, trigger: str, report: RunReport | None, *, full: bool) -> None:
        """Count one finished run (report None: it failed)."""
        self.runs.labels(trigger=trigger, outcome="succeeded" if report else "failed").inc()
        if report is None:
            self.failed_in_a_row.inc()
            return
        self.failed_in_a_row.set(0)
        self.key_refused.set(0)
        self.duration.observe(report.duration_seconds)
        self.rows_updated.inc(report.updated)
        cache = report.price_cache
        for result, count in (
            ("hit", cache.hits),
            ("asked", cache.asked),
            ("failed", cache.failed),
            ("pending", cache.pending),
        ):
            self.cache_services.labels(result=result).inc(count)
        for reason, count in cache.reasons.items():
            self.cache_asks.labels(reason=reason).inc(count)
        self.last_success.set(report.finished_at.timestamp())
        # Every kind seen so far goes back to 0, so a warning that cleared reads 0, not its old value.
        for kind in self._warning_kinds:
            self.warnings.labels(kind=kind).set(0)
        for kind in report.warning_kinds:
            self._warning_kinds.add(kind)
            self.warnings.labels(kind=kind).inc()
        if full:
            self.by_source.clear()
            self.by_reason.clear()
            for source, count in report.priced_by_source.items():
                self.by_source.labels(source=source).set(count)
            for reason, count in report.unpriced_by_reason.items():
                self.by_reason.labels(reason=reason).set(count)


def _refused_key(error: BaseException) -> bool:
    """Whether ``error`` is, or was raised from, Hostwinds refusing the API key."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, HostwindsAuthError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class _RequestMetrics:
    """ASGI middleware counting and timing every admin request by route template, method and status.

    Labels stay bounded: the route is the matched template (``/runs/{run_id}``, never a run id) or
    ``unmatched``, and an unusual method is counted as ``other``.
    """

    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

    def __init__(self, app: Starlette, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def _route(self, scope: Scope) -> str:
        partial = None
        for route in self.app.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL and isinstance(route, Route):
                return route.path
            if match is Match.PARTIAL and partial is None and isinstance(route, Route):
                partial = route.path  # the path exists, the method does not: 405 on that route
        return partial or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        method = scope["method"] if scope["method"] in self.METHODS else "other"
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.admin_duration.labels(route=route).observe(time.perf_counter() - started)
            self.metrics.admin_requests.labels(route=route, method=method, status=str(status)).inc()


class Daemon:
    """Scheduler, admin endpoint and runner around one Hostwinds client and one database pool."""

    def __init__(
        self,
        settings: Settings,
        client: HostwindsClient,
        pool: asyncpg.Pool,
        *,
        trigger: BaseTrigger | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        #: The wall clock runs date their work with, and the clock readiness measures ages on.
        self._now = now
        self._monotonic = monotonic
        #: The last run of this process that succeeded: when on the monotonic clock, and its report's
        #: finish time. A wall clock corrected backwards cannot make it look younger.
        self._last_success: tuple[float, datetime] | None = None
        #: Why the last run could not make progress (RunStalled), until a whole-fleet run succeeds.
        self.stalled: str | None = None
        self.client = client
        self.pool = pool
        self.store = store_for(pool, settings)
        self.cron = schedule.cron_trigger(settings.sync.schedule)
        self.trigger = trigger or self.cron
        self.runner = Runner(self._execute)
        self.metrics = Metrics(client)
        self.metrics.follow(lambda: self.runner.current)
        self.metrics.max_price_age.set(settings.sync.max_price_age_seconds)
        self.metrics.schedule_interval.set(schedule.longest_gap(self.cron, now()).total_seconds())
        self.scheduler: AsyncIOScheduler | None = None
        #: ``http://host:port`` of the admin endpoint once it listens.
        self.admin_url: str | None = None
        #: Hostwinds instances the runs so far matched to rows, by serviceid: lets POST /resync
        #: recognise a serviceid or server_uuid that a row reaches only through its instance.
        self.known_instances: dict[int, Instance] = {}
        #: Scheduled jobs in flight (each waits for the run it asked for).
        self._jobs: set[asyncio.Task[Any]] = set()
        #: Why the scheduler has not started: the schema check failed (None once it passes).
        self.schema_problem: str | None = None
        #: How often the schema is checked again while it is not ready.
        self.schema_retry_seconds = 30.0
        self._checking_schema = False

    async def _execute(self, record: RunRecord) -> RunReport:
        self.metrics.in_progress.set(1)
        try:
            result = await run_once(
                client=self.client,
                store=self.store,
                settings=self.settings,
                trigger=record.trigger,
                targets=record.instances,
                full=record.full,
                run_id=record.run_id,
                strict_targets=False,
                progress=record.progress,
                accept_changes=record.accept_changes,
                now=self._now,
                lease_wait=fleet_lease_wait(self.settings),
                served_since=record.served_since,
            )
        except BaseException as exc:
            if isinstance(exc, RunStalled):
                self.stalled = str(exc)
            self.metrics.in_progress.set(0)
            if not isinstance(exc, RunServed):
                self.metrics.failed(record.trigger, exc, full=record.instances is None)
            raise
        self._last_success = (self._monotonic(), result.report.finished_at)
        if record.instances is None:
            self.stalled = None
        matched = {o.instance.serviceid: o.instance for o in result.outcomes if o.instance is not None}
        if record.instances is None:
            self.known_instances = matched
        else:
            self.known_instances.update(matched)
        # Read what the run left first, then publish it all at once: a scrape never sees the run
        # counted with the fleet total of the run before.
        oldest = self.metrics.oldest_observation.since
        total = held = None
        held_since = self.metrics.held_oldest.since
        with contextlib.suppress(CostSyncError):
            oldest = await self.store.oldest_observation(self.settings.sync.statuses)
        with contextlib.suppress(CostSyncError):
            trust = TrustStore(self.pool)
            total = await trust.fleet_total(self.settings.sync.statuses)
            held, held_since = await trust.held_summary()
        self.metrics.in_progress.set(0)
        self.metrics.observe(record.trigger, result.report, full=record.instances is None)
        self.metrics.oldest_observation.since = oldest
        if total is not None and held is not None:
            self.metrics.fleet_total.set(float(total))  # float-ok: Prometheus samples are floats
            self.metrics.held.set(held)
            self.metrics.held_oldest.since = held_since
        return result.report

    async def unknown_targets(self, targets: list[str]) -> dict[str, str]:
        """Each target that names no row in scope, with why (as ``--once --instance`` says it).

        A target is a row's id or ``hostwinds_instance_id`` (trimmed, case-insensitive), or the
        serviceid or server_uuid of an instance an earlier run matched to a row in scope.
        """
        identities = await self.store.read_identities()
        _, unknown = resolve_targets(
            targets, identities, list(self.known_instances.values()), self.settings.sync.statuses
        )
        return unknown

    async def _scheduled(self) -> None:
        # The job lasts as long as its run, so a slow run makes the scheduler skip fires (max_instances=1)
        # instead of queueing a second whole-fleet run behind it.
        task = asyncio.current_task()
        assert task is not None
        self._jobs.add(task)
        try:
            # The process's own clock, as APScheduler's: the slot is compared as an age.
            fired = datetime.now(UTC)
            record = self.runner.request(None, "schedule", served_since=self.fire_slot(fired))
            await record.done.wait()
        finally:
            self._jobs.discard(task)

    def fire_slot(self, fired: datetime) -> datetime:
        """The scheduled time a fire at ``fired`` stands for (before jitter or a late start): the
        same on every replica, so a run any of them started since serves it for all."""
        sync = self.settings.sync
        start = fired - timedelta(seconds=sync.jitter_seconds + sync.misfire_grace_seconds + 1)
        slot = start
        fire = self.trigger.get_next_fire_time(None, start)
        while fire is not None and fire <= fired:
            slot = fire
            fire = self.trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
        return slot

    async def _watch_lease(self, stop: asyncio.Event) -> None:
        """While idle, look for a run whose lease expired unfinished (its replica was killed) and
        take over with a whole-fleet run: it marks that run abandoned. Several idle replicas may see
        it; the first to take the lease serves them all (the others' runs are skipped)."""
        interval = self.settings.database.lease_seconds / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set() or self.runner.busy:
                continue
            try:
                expired = await self.store.expired_holder()
            except CostSyncError as exc:
                log.warning("daemon.lease_check_failed", error=str(exc))
                continue
            if expired is not None and not self.runner.busy:
                dead, expired_at = expired
                log.warning(
                    "daemon.taking_over", abandoned_run=str(dead), lease_expired=expired_at.isoformat()
                )
                with contextlib.suppress(CostSyncError):
                    self.runner.request(None, "takeover", served_since=expired_at)

    # -- admin HTTP ---------------------------------------------------------------------------

    def app(self) -> ASGIApp:
        """The admin endpoint: /healthz, /readyz, /metrics, POST /resync, GET /runs, GET /runs/{id}."""
        app = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
                Route("/resync", self._resync, methods=["POST"]),
                Route("/runs", self._runs),
                Route("/runs/{run_id}", self._run),
            ]
        )
        return _RequestMetrics(app, self.metrics)

    async def _healthz(self, _: Request) -> Response:
        # Waiting for `cost-sync migrate` is alive, not ready: a restart would not help.
        alive = self.scheduler is not None and (self.scheduler.running or self._checking_schema)
        return JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    async def _readyz(self, _: Request) -> Response:
        """Ready when a run succeeded recently enough and the last one did not stall.

        "Recently" is measured on clocks a correction cannot turn back: the monotonic clock for
        this process's own runs, and for the ledger its latest success in lease order, aged on the
        database's clock (``now() - lease_taken``, else ``created``). ``finished`` is written by
        whichever clock cost-sync had, so a run made while it ran ahead would otherwise look fresh
        for as long.
        """
        if self.schema_problem is not None:
            reason = f"the scheduler waits for the schema: {self.schema_problem}"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        if self.stalled is not None:
            reason = f"the last run could not make progress: {self.stalled}"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        try:
            with database_errors("database does not answer"):
                async with self.pool.acquire(timeout=2) as conn:
                    ledger = await conn.fetchrow(
                        "SELECT finished, EXTRACT(EPOCH FROM now() - coalesce(lease_taken, created))::float8"
                        " AS age FROM cost_sync_runs WHERE outcome = 'succeeded'"
                        " ORDER BY coalesce(lease_taken, created) DESC, created DESC LIMIT 1",
                        timeout=2,
                    )
        except DatabaseError as exc:
            return JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
        # (age in seconds, the finish time the run recorded) of each success readiness can trust.
        known: list[tuple[float, datetime]] = []
        if self._last_success is not None:
            mono, finished = self._last_success
            known.append((self._monotonic() - mono, finished))
        future = ledger is not None and ledger["age"] < 0
        if ledger is not None and not future:
            known.append((ledger["age"], ledger["finished"]))
        if not known:
            reason = (
                f"the last successful sync is dated {int(-ledger['age'])} s in the future on the "
                "database's clock (a clock was corrected); ready again once a run succeeds"
                if future and ledger is not None
                else "no successful sync recorded yet"
            )
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        age, finished = min(known, key=lambda k: k[0])
        stale = schedule.stale_age(timedelta(seconds=age), self.cron, self._now())
        if stale:
            return JSONResponse({"ready": False, "reason": stale}, status_code=503)
        return JSONResponse({"ready": True, "last_success": finished.isoformat()})

    async def _metrics(self, _: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _authorised(self, request: Request) -> bool:
        token = self.settings.admin.token
        assert token is not None
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # compare_digest: the time taken says nothing about how much of the token matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.get_secret_value().encode()
        )

    def _rejected(self, request: Request) -> None:
        """Log and count a refused token: who sent it and why, never what it was."""
        given = request.headers.get("authorization")
        if given is None:
            reason = "missing"
        elif given.partition(" ")[0].lower() != "bearer":
            reason = "not_bearer"
        else:
            reason = "wrong"
        client = request.client
        source = f"{client.host}:{client.port}" if client is not None else "unknown"
        self.metrics.tokens_rejected.labels(reason=reason).inc()
        log.warning("admin.token_rejected", source=source, reason=reason, path=request.url.path)

    async def _resync(self, request: Request) -> Response:
        if self.settings.admin.token is None:
            return JSONResponse(
                {"error": "resync is disabled: no admin token is configured (COST_SYNC_ADMIN_TOKEN)"},
                status_code=404,
            )
        if not self._authorised(request):
            self._rejected(request)
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        raw = await _read_capped(request, MAX_RESYNC_BODY_BYTES)
        if raw is None:
            return JSONResponse(
                {"error": f"the body is larger than {MAX_RESYNC_BODY_BYTES} bytes"}, status_code=413
            )
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        instances = body.get("instances") if isinstance(body, dict) else None
        full = body.get("full", False) if isinstance(body, dict) else False
        accept = body.get("accept_changes", False) if isinstance(body, dict) else False
        if not isinstance(body, dict) or (
            "instances" in body
            and not (
                isinstance(instances, list)
                and 0 < len(instances) <= MAX_INSTANCES_PER_REQUEST
                and all(isinstance(i, str) and i.strip() for i in instances)
            )
        ):
            return JSONResponse(
                {"error": 'expected {"instances": ["id", ...]} (1 to 1000 non-empty strings) or {}'},
                status_code=400,
            )
        if self.schema_problem is not None:
            return JSONResponse({"error": self.schema_problem}, status_code=503)
        problem = next(filter(None, map(_bad_instance_id, instances or [])), None)
        if problem is not None:
            # Refused before queueing: a bad id must not fail the other targets merged with it.
            return JSONResponse({"error": problem}, status_code=400)
        if instances:
            try:
                unknown = await self.unknown_targets(instances)
            except DatabaseError as exc:
                return JSONResponse({"error": f"cannot check the instances: {exc}"}, status_code=503)
            if unknown:
                # Refused before anything is queued: the caller named rows that are not there.
                return JSONResponse(
                    {
                        "error": "; ".join(f"{target}: {why}" for target, why in unknown.items()),
                        "unknown_instances": unknown,
                    },
                    status_code=400,
                )
        if not isinstance(full, bool):
            return JSONResponse({"error": '"full" must be true or false'}, status_code=400)
        if not isinstance(accept, bool):
            return JSONResponse({"error": '"accept_changes" must be true or false'}, status_code=400)
        try:
            # Named instances are asked afresh: that is the after-upgrade case.
            # Named instances apply their new price too, however large the change.
            record = self.runner.request(
                instances,
                "resync",
                full=full or instances is not None,
                accept_changes=accept or instances is not None,
            )
        except CostSyncError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        log.info("daemon.resync_requested", run_id=str(record.run_id), instances=instances)
        return JSONResponse(
            {"run_id": str(record.run_id), "state": record.state.value, "location": f"/runs/{record.run_id}"},
            status_code=202,
        )

    async def _runs(self, request: Request) -> Response:
        """Known runs, newest first, ``limit`` at a time; ``before`` (a run id) pages to older ones."""
        raw_limit = request.query_params.get("limit", str(RUNS_PAGE))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= RUNS_KEPT:
            return JSONResponse({"error": f"limit must be a number from 1 to {RUNS_KEPT}"}, status_code=400)
        limit = int(raw_limit)
        before: uuid.UUID | None = None
        if "before" in request.query_params:
            try:
                before = uuid.UUID(request.query_params["before"])
            except ValueError:
                return JSONResponse({"error": "before must be a run id"}, status_code=400)
            if self.runner.get(before) is None:
                return JSONResponse(
                    {"error": "before names no known run (or one too old to be kept)"}, status_code=404
                )
        records, more = self.runner.newest(limit, before)
        following = f"/runs?limit={limit}&before={records[-1].run_id}" if more else None
        return JSONResponse({"runs": [record.as_json() for record in records], "next": following})

    async def _run(self, request: Request) -> Response:
        try:
            run_id = uuid.UUID(request.path_params["run_id"])
        except ValueError:
            return JSONResponse({"error": "not a run id"}, status_code=404)
        record = self.runner.get(run_id)
        if record is None:
            return JSONResponse({"error": "no such run (or it is too old to be kept)"}, status_code=404)
        return JSONResponse(record.as_json())

    # -- life cycle ---------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event, *, initial_sync: bool = True) -> bool:
        """Run until ``stop`` is set; return True if no run had to be cancelled on the way out.

        Whatever was started (endpoint, scheduler, runs) is stopped on every way out, an error or a
        cancellation included. A taken admin port is a ConfigError naming the setting.
        """
        host, _, port = self.settings.admin.listen.rpartition(":")
        sync = self.settings.sync
        try:
            # Binding starts nothing: on failure there is nothing to stop.
            server = AppServer(
                self.app(),
                host=host.strip("[]"),
                port=int(port),
                max_connections=self.settings.admin.max_connections,
                request_timeout=self.settings.admin.request_timeout_seconds,
            )
        except OSError as exc:
            raise ConfigError(f"setting admin.listen: {exc.strerror or exc}") from None
        finished = True
        try:
            # Created here, inside the running loop: APScheduler 3.11 binds to it on start().
            self.scheduler = AsyncIOScheduler(timezone=UTC)
            self.scheduler.add_job(
                self._scheduled,
                self.trigger,
                id="sync",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=sync.misfire_grace_seconds,
                jitter=sync.jitter_seconds or None,
            )
            # Before the admin port opens, so that no scrape sees "never succeeded" after a restart;
            # again once the schema is there, for a daemon that started before `migrate`.
            await self._last_success_from_ledger()
            await server.start()
            self.admin_url = server.base_url
            if not await self._wait_for_schema(stop):
                return True
            await self._last_success_from_ledger()
            self.scheduler.start()
            log.info(
                "daemon.started",
                admin=server.base_url,
                schedule=sync.schedule,
                next_run=str(self.scheduler.get_job("sync").next_run_time),
            )
            if initial_sync:
                # Replicas started together: one start-up sync serves them all.
                self.runner.request(None, "startup", served_since=datetime.now(UTC))
            watcher = asyncio.create_task(self._watch_lease(stop), name="cost-sync-lease-watch")
            try:
                await stop.wait()
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        finally:
            log.info(
                "daemon.stopping", run_in_flight=self.runner.busy, grace_seconds=sync.shutdown_grace_seconds
            )
            scheduler = self.scheduler if self.scheduler is not None and self.scheduler.running else None
            if scheduler is not None:
                scheduler.pause()  # no new fires while the run in flight finishes
            try:
                finished = await self.runner.close(sync.shutdown_grace_seconds)
                # Every run is done now, so a scheduled job waiting on one returns on its own; shutting
                # the scheduler down under it would cancel it and log an error for a clean stop.
                if self._jobs:
                    await asyncio.wait(set(self._jobs), timeout=1)
            finally:
                if scheduler is not None:
                    scheduler.shutdown(wait=False)
                await server.stop()
            log.info("daemon.stopped", in_flight_run_cancelled=not finished)
        return finished

    async def _last_success_from_ledger(self) -> None:
        """Start cost_sync_last_success_timestamp_seconds at the ledger's last successful whole-fleet
        run, so a restart does not read as "never succeeded" until its first run ends. Called
        before the scheduler starts: no run of this process has set it yet."""
        # Bounded: a database that does not answer must not hold the admin port closed.
        with contextlib.suppress(CostSyncError, TimeoutError):
            async with asyncio.timeout(5):
                last = await TrustStore(self.pool).last_fleet_run()
            if last is not None:
                self.metrics.last_success.set(last.finished.timestamp())

    async def _wait_for_schema(self, stop: asyncio.Event) -> bool:
        """Check the schema (as ``migrate --check``) until it passes; False if stopped first.

        Until it passes no run starts, so nothing asks Hostwinds, and /readyz says why.
        """
        self._checking_schema = True
        try:
            return await self._schema_loop(stop)
        finally:
            self._checking_schema = False

    async def _schema_loop(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            try:
                await require_schema(self.pool)
            except DatabaseError as exc:
                if self.schema_problem != str(exc):
                    log.error(
                        "daemon.schema_not_ready", reason=str(exc), retry_seconds=self.schema_retry_seconds
                    )
                self.schema_problem = str(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.schema_retry_seconds)
                continue
            if self.schema_problem is not None:
                log.info("daemon.schema_ready")
            self.schema_problem = None
            return True
        return False
