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
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from starlette.types import ASGIApp

from cost_sync.daemon import schedule
from cost_sync.daemon.admin import AdminApi
from cost_sync.daemon.metrics import Metrics
from cost_sync.daemon.runs import Runner, RunRecord
from cost_sync.domain.matching import resolve_targets
from cost_sync.domain.models import Instance, RunReport
from cost_sync.errors import (
    ConfigError,
    CostSyncError,
    DatabaseError,
    RunServed,
    RunStalled,
)
from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import fleet_lease_wait, run_once, store_for
from cost_sync.runtime.httpserve import AppServer
from cost_sync.settings import Settings
from cost_sync.store.migrate import require_schema
from cost_sync.store.trust import TrustStore

log = structlog.get_logger("cost_sync.daemon")


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
                request=RunRequest.queued(
                    record.trigger,
                    record.instances,
                    run_id=record.run_id,
                    full=record.full,
                    accept_changes=record.accept_changes,
                    lease_wait=fleet_lease_wait(self.settings),
                    served_since=record.served_since,
                ),
                progress=record.progress,
                now=self._now,
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

    @property
    def alive(self) -> bool:
        """The scheduler runs, or waits for ``cost-sync migrate`` (alive, not ready: a restart
        would not help)."""
        return self.scheduler is not None and (self.scheduler.running or self._checking_schema)

    def own_success(self) -> tuple[float, datetime] | None:
        """This process's last successful run: its age in seconds on the monotonic clock, and the
        finish time its report recorded (None before one)."""
        if self._last_success is None:
            return None
        mono, finished = self._last_success
        return self._monotonic() - mono, finished

    def now(self) -> datetime:
        """The wall clock the daemon's runs date their work with."""
        return self._now()

    def app(self) -> ASGIApp:
        """The admin endpoint (:class:`AdminApi`) over this daemon."""
        return AdminApi(self).app()

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
