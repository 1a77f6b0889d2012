"""The daemon's Prometheus metrics: runs, prices, Hostwinds requests and the admin API's own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from cost_sync import __version__, build_revision
from cost_sync.daemon.runs import RunRecord
from cost_sync.domain.models import RunReport
from cost_sync.errors import (
    HostwindsAuthError,
)
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.sync import Progress


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
        self._runs()
        self._price_cache()
        self._fleet()
        self._admin()
        self._process(client)

    def _runs(self) -> None:
        """Runs: the schedule, in flight, by outcome, how long, failures in a row, their warnings."""
        r = self.registry
        self.schedule_interval = Gauge(
            "cost_sync_schedule_interval_seconds",
            "The longest gap between the upcoming fires of [sync] schedule.",
            registry=r,
        )
        self.in_progress = Gauge("cost_sync_run_in_progress", "1 while a run is in flight.", registry=r)
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

    def _price_cache(self) -> None:
        """The price cache: what it did per service, why it asked, how old its answers are."""
        r = self.registry
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
        self.max_price_age = Gauge(
            "cost_sync_max_price_age_seconds",
            "[sync] max_price_age_seconds: how old a cached cycle price may be before it is asked again.",
            registry=r,
        )

    def _fleet(self) -> None:
        """The fleet after the last run: priced and unpriced rows, its monthly total, held changes."""
        r = self.registry
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
        self.fleet_total = Gauge(
            "cost_sync_fleet_monthly_usd",
            "Sum of approximate_cost over the rows in scope after the last run.",
            registry=r,
        )
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

    def _admin(self) -> None:
        """The admin HTTP endpoint's own requests, durations and refused tokens."""
        r = self.registry
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

    def _process(self, client: HostwindsClient) -> None:
        """The build, the process (CPU, memory, open files) and the Hostwinds client's requests."""
        r = self.registry
        build = Gauge(
            "cost_sync_build_info",
            "The running cost-sync build: its version and the git revision it was built from; always 1.",
            ["version", "revision"],
            registry=r,
        )
        build.labels(version=__version__, revision=build_revision()).set(1)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        ProcessCollector(registry=r)
        r.register(_HostwindsRequests(client))

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


class RequestMetrics:
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
