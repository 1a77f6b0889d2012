"""The admin HTTP API: /healthz, /readyz, /metrics, POST /resync, GET /runs, GET /runs/{id}."""

from __future__ import annotations

import hmac
import json
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from cost_sync.daemon import schedule
from cost_sync.daemon.metrics import RequestMetrics
from cost_sync.daemon.runs import RUNS_KEPT, RUNS_PAGE
from cost_sync.domain.models import storable_text
from cost_sync.errors import (
    CostSyncError,
    DatabaseError,
)
from cost_sync.run.request import RunRequest
from cost_sync.store.db import database_errors
from cost_sync.store.sqlfiles import queries

if TYPE_CHECKING:
    from cost_sync.daemon.service import Daemon

log = structlog.get_logger("cost_sync.daemon")

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


class AdminApi:
    """The admin endpoint's routes, answered from the daemon's state."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

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
        return RequestMetrics(app, self.daemon.metrics)

    async def _healthz(self, _: Request) -> Response:
        alive = self.daemon.alive
        return JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    async def _readyz(self, _: Request) -> Response:
        """Ready when a run succeeded recently enough and the last one did not stall.

        "Recently" is measured on clocks a correction cannot turn back: the monotonic clock for
        this process's own runs, and for the ledger its latest success in lease order, aged on the
        database's clock (``now() - lease_taken``, else ``created``). ``finished`` is written by
        whichever clock cost-sync had, so a run made while it ran ahead would otherwise look fresh
        for as long.
        """
        if self.daemon.schema_problem is not None:
            reason = f"the scheduler waits for the schema: {self.daemon.schema_problem}"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        if self.daemon.stalled is not None:
            reason = f"the last run could not make progress: {self.daemon.stalled}"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        try:
            with database_errors("database does not answer"):
                async with self.daemon.pool.acquire(timeout=2) as conn:
                    ledger = await conn.fetchrow(queries("trust")["last_success_age"], timeout=2)
        except DatabaseError as exc:
            return JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
        # (age in seconds, the finish time the run recorded) of each success readiness can trust.
        known: list[tuple[float, datetime]] = []
        own = self.daemon.own_success()
        if own is not None:
            known.append(own)
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
        stale = schedule.stale_age(timedelta(seconds=age), self.daemon.cron, self.daemon.now())
        if stale:
            return JSONResponse({"ready": False, "reason": stale}, status_code=503)
        return JSONResponse({"ready": True, "last_success": finished.isoformat()})

    async def _metrics(self, _: Request) -> Response:
        return Response(generate_latest(self.daemon.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _authorised(self, request: Request) -> bool:
        token = self.daemon.settings.admin.token
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
        self.daemon.metrics.tokens_rejected.labels(reason=reason).inc()
        log.warning("admin.token_rejected", source=source, reason=reason, path=request.url.path)

    async def _resync(self, request: Request) -> Response:
        if self.daemon.settings.admin.token is None:
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
        if self.daemon.schema_problem is not None:
            return JSONResponse({"error": self.daemon.schema_problem}, status_code=503)
        problem = next(filter(None, map(_bad_instance_id, instances or [])), None)
        if problem is not None:
            # Refused before queueing: a bad id must not fail the other targets merged with it.
            return JSONResponse({"error": problem}, status_code=400)
        if instances:
            try:
                unknown = await self.daemon.unknown_targets(instances)
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
        wanted = RunRequest.resync(instances, full=full, accept_changes=accept)
        try:
            record = self.daemon.runner.request(
                instances, wanted.trigger, full=wanted.full, accept_changes=wanted.accept_changes
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
            if self.daemon.runner.get(before) is None:
                return JSONResponse(
                    {"error": "before names no known run (or one too old to be kept)"}, status_code=404
                )
        records, more = self.daemon.runner.newest(limit, before)
        following = f"/runs?limit={limit}&before={records[-1].run_id}" if more else None
        return JSONResponse({"runs": [record.as_json() for record in records], "next": following})

    async def _run(self, request: Request) -> Response:
        try:
            run_id = uuid.UUID(request.path_params["run_id"])
        except ValueError:
            return JSONResponse({"error": "not a run id"}, status_code=404)
        record = self.daemon.runner.get(run_id)
        if record is None:
            return JSONResponse({"error": "no such run (or it is too old to be kept)"}, status_code=404)
        return JSONResponse(record.as_json())
