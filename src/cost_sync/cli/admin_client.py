"""Client of a running daemon's admin endpoint: ask for a resync and wait for its outcome."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx

from cost_sync.cli import render
from cost_sync.domain.models import RunReport
from cost_sync.domain.redact import for_terminal
from cost_sync.errors import ConfigError, CostSyncError
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
    """POST /resync to the daemon at ``admin.url``, then poll its run until it ends; the run record.

    Every answer is checked before use: one the daemon refuses (400) is a ConfigError, any other
    unexpected answer a CostSyncError naming the daemon, never a traceback.
    """
    url, token = settings.admin.url, settings.admin.token
    if url is None:
        raise ConfigError("setting admin.url: required to ask a daemon (set COST_SYNC_ADMIN_URL)")
    if token is None:
        raise ConfigError(
            "setting admin.token: required to ask the daemon "
            "(set COST_SYNC_ADMIN_TOKEN or COST_SYNC_ADMIN_TOKEN_FILE)"
        )
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
            if answer.status_code == 400:
                # The daemon refused the request itself (e.g. an id naming no row): a usage error.
                raise ConfigError(f"the daemon at {base} refused the request: {_error_of(answer)}")
            if answer.status_code != 202:
                raise CostSyncError(
                    f"the daemon at {base} answered HTTP {answer.status_code}: {_error_of(answer)}"
                )
            run_id = _field(answer, "run_id", base)
            deadline = time.monotonic() + wait
            while True:
                polled = await http.get(f"/runs/{run_id}")
                if polled.status_code != 200:
                    raise CostSyncError(
                        f"the daemon at {base} answered HTTP {polled.status_code} for run {run_id}: "
                        f"{_error_of(polled)}"
                    )
                record = _record(polled, base)
                if record["state"] in _FINAL:
                    return record
                if time.monotonic() > deadline:
                    raise CostSyncError(
                        f"run {run_id} has not finished after {wait:g} s; follow it at {base}/runs/{run_id}"
                    )
                await asyncio.sleep(_POLL_SECONDS)
        except httpx.HTTPError as exc:
            raise CostSyncError(f"cannot reach the daemon at {base}: {type(exc).__name__}") from None


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _error_of(answer: httpx.Response) -> str:
    """The daemon's ``error`` field, else the start of the body on one line."""
    data = _json(answer)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        error: str = data["error"]
        return error[:300]
    return " ".join(answer.text.split())[:200] or "(empty body)"


def _field(answer: httpx.Response, name: str, base: str) -> str:
    data = _json(answer)
    if not isinstance(data, dict) or not isinstance(data.get(name), str):
        raise CostSyncError(f"the daemon at {base} gave an answer without a {name}: is it cost-sync?")
    value: str = data[name]
    return value


def _record(answer: httpx.Response, base: str) -> dict[str, Any]:
    data = _json(answer)
    if not isinstance(data, dict) or not isinstance(data.get("state"), str) or "run_id" not in data:
        raise CostSyncError(f"the daemon at {base} gave a run record cost-sync does not understand")
    if data["state"] in _FINAL and data.get("report") is not None:
        try:
            RunReport.model_validate(data["report"])
        except ValueError:
            raise CostSyncError(
                f"the daemon at {base} gave a run report cost-sync does not understand"
            ) from None
    return data


def show(record: dict[str, Any], *, as_json: bool) -> int:
    """Print a daemon run's outcome; the exit code: 0 done, 1 failed, 2 an instance named no row.

    With ``as_json`` the record is printed with ``outcome`` and ``exit_code`` added, so that a
    failed run reads like any other ``--json`` failure.
    """
    report = RunReport.model_validate(record["report"]) if record.get("report") else None
    failed = record["state"] == "failed"
    asked = set(record.get("instances") or [])
    unknown = {k: v for k, v in (report.unknown_instances if report else {}).items() if k in asked}
    code = 1 if failed else 2 if unknown else 0
    if as_json:
        print(json.dumps({"outcome": record["state"], "exit_code": code, **record}, indent=2))
    elif report is not None:
        print(for_terminal(render.summary(report)))
    if failed:
        print(f"cost-sync: error: run {record['run_id']} failed: {record.get('error')}", file=sys.stderr)
    for target, why in unknown.items():
        print(f"cost-sync: error: --instance {target}: {why}", file=sys.stderr)
    return code
