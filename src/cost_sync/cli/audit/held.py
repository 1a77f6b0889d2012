"""``cost-sync held`` and ``approve``: the changes a run held for a person, and applying them.

``approve`` re-checks each held change against what a run would compute now (a dry run over the
cache, read-only at Hostwinds) and applies the ones that still stand in one transaction, under
the run lease."""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from datetime import UTC, datetime

import structlog

from cost_sync.cli import render
from cost_sync.cli.audit.common import database, one_row
from cost_sync.domain import guard
from cost_sync.domain.models import RunReport
from cost_sync.domain.redact import for_terminal
from cost_sync.domain.reporting import HeldRow
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once, store_for
from cost_sync.settings import Settings
from cost_sync.store.migrate import require_schema
from cost_sync.store.trust import TrustStore
from cost_sync.wiring import open_resources

log = structlog.get_logger("cost_sync.trust_cli")


async def _held(args: argparse.Namespace, settings: Settings) -> int:
    async with database(settings) as pool:
        held = await TrustStore(pool).held()
    if args.json:
        print(json.dumps({"count": len(held), "rows": [h.as_json() for h in held]}, indent=2))
        return 0
    if not held:
        print("no changes are held")
        return 0
    rows = [
        [
            h.hostwinds_instance_id or str(h.row_id),
            render.money(h.old),
            render.money(h.proposed),
            str(h.ratio),
            h.reason,
            h.since.isoformat(timespec="seconds"),
        ]
        for h in held
    ]
    print(for_terminal(render.table(["row", "old", "proposed", "ratio", "reason", "since"], rows)))
    return 0


def _replaced(shown: HeldRow, now: HeldRow | None) -> str | None:
    """Why the held change read at the start is not the one held now (None: it still is)."""
    if now is None:
        return "the held change is gone (applied, or a run no longer proposes it)"
    if (now.run_id, now.proposed, now.old) != (shown.run_id, shown.proposed, shown.old):
        return (
            f"run {now.run_id} replaced the held change while approving: it proposes {now.proposed} now, "
            f"not {shown.proposed}; review it with `cost-sync held`"
        )
    return None


async def _approve(args: argparse.Namespace, settings: Settings) -> int:
    # One id for the whole approval: its recheck's log lines, its own, and its ledger row.
    run_id = uuid.uuid4()
    with structlog.contextvars.bound_contextvars(run_id=str(run_id), trigger="approve"):
        return await _approve_as(run_id, args, settings)


async def _approve_as(run_id: uuid.UUID, args: argparse.Namespace, settings: Settings) -> int:
    started = datetime.now(UTC)
    settings.require("hostwinds.api_key", "database.url")
    async with open_resources(settings) as (client, pool):
        await require_schema(pool)
        trust, store = TrustStore(pool), store_for(pool, settings)
        refused: dict[str, str] = {}
        # What is approved is read before waiting for the run lock: a run that replaces a held
        # change meanwhile makes approve refuse that row, never apply a value nobody reviewed.
        if args.all:
            held = await trust.held()
        else:
            index = await trust.identities()
            ids = [one_row(index, key) for key in args.instance]
            held = await trust.held(ids)
            held_ids = {h.row_id for h in held}
            for key, row_id in zip(args.instance, ids, strict=True):
                if row_id not in held_ids:
                    refused[key] = "no change is held for this row"
        lock = (
            store.lock(timeout=settings.database.lock_timeout_seconds, run_id=run_id)
            if not args.dry_run
            else contextlib.nullcontext()
        )
        async with lock:
            now_held = {h.row_id: h for h in await trust.held([h.row_id for h in held])} if held else {}
            shown: list[HeldRow] = []
            for h in held:
                why = _replaced(h, now_held.get(h.row_id))
                if why is None:
                    shown.append(h)
                else:
                    refused[h.hostwinds_instance_id or str(h.row_id)] = why
            decided: dict[uuid.UUID, str | None] = {}
            if shown:
                # What a run would compute now: a dry run over these rows, cached prices first.
                result = await run_once(
                    client=client,
                    store=store,
                    settings=settings,
                    request=RunRequest.recheck([h.row_id for h in shown], run_id=run_id),
                )
                # The recheck unbinds the run's context when it ends; the approval goes on under it.
                structlog.contextvars.bind_contextvars(run_id=str(run_id), trigger="approve")
                outcomes = {o.row.id: o for o in result.outcomes}
                for h in shown:
                    outcome = outcomes.get(h.row_id)
                    decided[h.row_id] = guard.recheck(
                        old=h.old,
                        proposed=h.proposed,
                        current=outcome.row.approximate_cost if outcome else None,
                        now=outcome.result if outcome else None,
                    )
            ok = [h for h in shown if decided.get(h.row_id) is None]
            refused.update(
                {h.hostwinds_instance_id or str(h.row_id): why for h in shown if (why := decided[h.row_id])}
            )
            applied: set[uuid.UUID] = set()
            if ok and not args.dry_run:
                report = RunReport(
                    run_id=run_id,
                    trigger="approve",
                    outcome="succeeded",
                    started_at=started,
                    finished_at=datetime.now(UTC),
                    rows_in_scope=len(ok),
                    instances=[str(h.row_id) for h in ok],
                )
                applied = set(
                    await trust.approve(
                        run_id,
                        [(h.row_id, h.run_id, h.proposed) for h in ok],
                        statuses=settings.sync.statuses,
                        report=report,
                        lock_timeout=settings.database.lock_timeout_seconds,
                        fence=store.fence,
                    )
                )
                refused.update(
                    {
                        h.hostwinds_instance_id
                        or str(h.row_id): "the row or its held change changed while approving"
                        for h in ok
                        if h.row_id not in applied
                    }
                )
    would = [h.hostwinds_instance_id or str(h.row_id) for h in ok if args.dry_run or h.row_id in applied]
    log.info(
        "approve.finished",
        dry_run=args.dry_run,
        held=len(held),
        approved=len(would) if not args.dry_run else 0,
        refused=len(refused),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": args.dry_run,
                    "run_id": None if args.dry_run or not applied else str(run_id),
                    "approved" if not args.dry_run else "would_approve": would,
                    "refused": refused,
                },
                indent=2,
            )
        )
    else:
        if not held and not refused:
            print("no changes are held: nothing to approve")
            return 0
        verb = "would approve" if args.dry_run else "approved"
        lines = [f"{verb} {len(would)} held change(s)" + (f": {', '.join(would)}" if would else "")]
        lines += [f"refused {name}: {why}" for name, why in refused.items()]
        print(for_terminal(lines))
    return 1 if refused else 0
