"""Client of a running daemon's admin endpoint: ask for a resync and wait for its outcome."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx

from cost_sync import render
from cost_sync.errors import ConfigError, CostSyncError
from cost_sync.models import RunReport
from cost_sync.settings import Settings

_POLL_SECONDS = 0.5
_FINAL = {"succeeded", "failed"}


async def resync(
    settings: Settings,
    instances: list[str] | None,
    *,
    wait: float,
    full: bool = False,
    accept_changes: bool = False,
) -> dict[str, Any]:
    """POST /resync to the daemon at ``admin.url``, then poll its run until it ends; the run record."""
    url, token = settings.admin.url, settings.admin.token
    if url is None:
        raise ConfigError("setting admin.url: required to ask a daemon (set COST_SYNC_ADMIN_URL)")
    if token is None:
        raise ConfigError("setting admin.token: required to ask the daemon (set COST_SYNC_ADMIN_TOKEN)")
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    body: dict[str, Any] = {} if instances is None else {"instances": instances}
    if full:
        body["full"] = True
    if accept_changes:
        body["accept_changes"] = True
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
        try:
            answer = await http.post("/resync", json=body)
            if answer.status_code == 401:
                raise CostSyncError(f"the daemon at {base} refused the admin token")
            if answer.status_code == 404:
                raise CostSyncError(f"the daemon at {base} has resync disabled (it has no admin token)")
            if answer.status_code != 202:
                raise CostSyncError(
                    f"the daemon at {base} answered HTTP {answer.status_code}: {answer.text[:200]}"
                )
            run_id = answer.json()["run_id"]
            deadline = time.monotonic() + wait
            while True:
                record: dict[str, Any] = (await http.get(f"/runs/{run_id}")).json()
                if record.get("state") in _FINAL:
                    return record
                if time.monotonic() > deadline:
                    raise CostSyncError(
                        f"run {run_id} has not finished after {wait:g} s; follow it at {base}/runs/{run_id}"
                    )
                await asyncio.sleep(_POLL_SECONDS)
        except httpx.HTTPError as exc:
            raise CostSyncError(f"cannot reach the daemon at {base}: {type(exc).__name__}") from None


def show(record: dict[str, Any], *, as_json: bool) -> int:
    """Print a daemon run's outcome; the exit code: 0 done, 1 failed, 2 an instance named no row."""
    report = RunReport.model_validate(record["report"]) if record.get("report") else None
    if as_json:
        print(json.dumps(record, indent=2))
    elif report is not None:
        print("\n".join(render.summary(report)))
    if record["state"] == "failed":
        print(f"cost-sync: error: run {record['run_id']} failed: {record.get('error')}", file=sys.stderr)
        return 1
    asked = set(record.get("instances") or [])
    unknown = {k: v for k, v in (report.unknown_instances if report else {}).items() if k in asked}
    for target, why in unknown.items():
        print(f"cost-sync: error: --instance {target}: {why}", file=sys.stderr)
    return 2 if unknown else 0
