"""The handlers of the verbs that let a person check every number: explain, held, approve, report, quote.

Their parsers are registered in :mod:`cost_sync.cli.main`, which imports this module only when one runs.

Guarantees: ``explain``, ``held`` and ``report`` read the database only (no Hostwinds call);
``quote`` reads Hostwinds and the database and writes nothing; ``approve`` re-checks each held
change against what a run would compute now (a dry run over the cache, read-only at Hostwinds)
and applies the ones that still stand in one transaction, under the run lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from cost_sync.cli import render, report_data
from cost_sync.domain import explain, guard, matching, pricing, reporting
from cost_sync.domain.matching import RowIndex, match_rows, resolve_targets, shared_uuid_unpriced
from cost_sync.domain.models import RunReport, override_key
from cost_sync.domain.redact import for_terminal, terminal_text
from cost_sync.domain.reporting import HeldRow
from cost_sync.errors import ConfigError, CostSyncError
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once, store_for
from cost_sync.settings import Settings
from cost_sync.store.db import create_pool
from cost_sync.store.migrate import require_schema
from cost_sync.store.postgres import Store
from cost_sync.store.trust import TrustStore
from cost_sync.wiring import open_resources

__all__ = ["HANDLERS"]

log = structlog.get_logger("cost_sync.trust_cli")

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(
        settings.database_dsn(),
        timeout=settings.database.connect_timeout_seconds,
        statement_cache_size=settings.database.statement_cache_size,
    )
    try:
        await require_schema(pool)
        yield pool
    finally:
        await pool.close()


def _one_row(index: RowIndex, key: str) -> uuid.UUID:
    found = [row.id for row in index.named(key)]
    if not found:
        raise ConfigError(f"{key}: matches no vps_instances row")
    if len(found) > 1:
        raise ConfigError(f"{key}: matches {len(found)} rows; name one by its row id")
    return found[0]


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


# -- explain ------------------------------------------------------------------------------------


async def _explain(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as pool:
        trust = TrustStore(pool)
        row_id = _one_row(await trust.identities(), args.id)
        try:
            data = await report_data.explain_row(trust, settings, row_id)
        except ConfigError:
            raise ConfigError(f"{args.id}: the row was deleted") from None
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(for_terminal(report_data.explain_text(data)))
    return 0


# -- held and approve ---------------------------------------------------------------------------


async def _held(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as pool:
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
            ids = [_one_row(index, key) for key in args.instance]
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


# -- report -------------------------------------------------------------------------------------


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "html", None) is not None:
        if args.csv:
            raise ConfigError("--html writes a page; --csv prints a table: give one")
        return await _report_html(args, settings)
    if getattr(args, "since", None) is not None:
        raise ConfigError("--since goes with --html (report --json and --csv show the fleet now)")
    async with _database(settings) as pool:
        data = await report_data.report_json(TrustStore(pool), settings, datetime.now(UTC))
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.csv:
        print(reporting.report_csv(data), end="")
    else:
        print(for_terminal(_report_text(data)))
    return 0


async def _report_html(args: argparse.Namespace, settings: Settings) -> int:
    from cost_sync.cli import report_html

    # Before the database is read: a missing extra is a one-line exit 2.
    report_html.require_matplotlib()
    now = datetime.now(UTC)
    since = args.since or (now - timedelta(days=report_html.DEFAULT_DAYS)).date()
    if since > now.date():
        raise ConfigError(f"--since {since.isoformat()} is in the future")
    async with _database(settings) as pool:
        data = await report_data.html_data(pool, settings, since=since, now=now)
    page = report_html.render_page(data)
    path: Path = args.html
    try:
        await asyncio.to_thread(path.write_text, page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps({"outcome": "written", "path": str(path), "bytes": len(page.encode())}))
    else:
        print(f"report written to {path} ({len(page.encode()) // 1024} KiB; open it in a browser)")
    return 0


def _report_text(data: dict[str, Any]) -> list[str]:
    lines = [
        f"fleet monthly total ${data['fleet_monthly_total']} over {data['rows_in_scope']} rows in scope"
        + (f" ({data['rows_without_value']} without a value)" if data["rows_without_value"] else "")
        + (
            f"; {data['provisional']} provisional (price-list estimates their own prices will refine)"
            if data.get("provisional")
            else ""
        )
    ]
    for section in ("by_status", "by_plan", "by_cycle", "by_source", "by_region"):
        rows = [
            [key, f"${e['total']}", str(e["rows"]), e.get("name") or ""] for key, e in data[section].items()
        ]
        lines += ["", section.replace("_", " ") + ":"]
        lines += ["  " + line for line in render.table(["", "total", "rows", ""], rows)]
    if data["unpriced"]:
        lines += ["", f"unpriced ({len(data['unpriced'])}; value kept):"]
        rows = [
            [
                u["hostwinds_instance_id"] or u["row_id"],
                u["kept_value"] or "-",
                u["reason"],
                u["detail"] or "",
            ]
            for u in data["unpriced"]
        ]
        lines += ["  " + line for line in render.table(["row", "kept", "reason", "detail"], rows)]
    if data["held"]:
        lines += ["", f"held ({len(data['held'])}):"]
        rows = [
            [h["hostwinds_instance_id"] or h["row_id"], h["old"] or "-", h["proposed"], h["ratio"]]
            for h in data["held"]
        ]
        lines += ["  " + line for line in render.table(["row", "old", "proposed", "ratio"], rows)]
    if data["drift"]:
        lines += ["", f"drift against monthly_cost ({len(data['drift'])}, largest first):"]
        rows = [
            [
                d["hostwinds_instance_id"] or d["row_id"],
                d["approximate_cost"],
                d["monthly_cost"],
                d["difference"],
                f"{d['percent']}%" if d["percent"] is not None else "-",
            ]
            for d in data["drift"]
        ]
        lines += [
            "  " + line
            for line in render.table(["row", "approximate", "monthly_cost", "difference", "%"], rows)
        ]
    if data["upgrade_available"]:
        names = ", ".join(u["hostwinds_instance_id"] or u["row_id"] for u in data["upgrade_available"])
        lines += ["", f"upgrade available at Hostwinds: {names}"]
    age = data["oldest_observation_age_seconds"]
    lines += [
        "",
        f"oldest price observation: {data['oldest_observation'] or 'none'}"
        + (
            " (dated in the future: the clock ran ahead; the next run asks it again)"
            if data["oldest_observation_in_future"]
            else f" ({age // 3600} h old)"
            if age is not None
            else ""
        ),
    ]
    last = data["last_run"]
    if last is not None:
        warnings = last["warnings"]
        lines.append(
            f"last whole-fleet run {last['run_id']} ({last['trigger']}) finished {last['finished']}: "
            + (f"{len(warnings)} warning(s)" if warnings else "no warnings")
        )
        lines += [f"  warning: {w}" for w in warnings]
    return lines


# -- quote --------------------------------------------------------------------------------------


async def _quote(args: argparse.Namespace, settings: Settings) -> int:
    cycle = None
    if args.cycle is not None:
        cycle = pricing.normalise_cycle(args.cycle)
        if cycle is None:
            raise ConfigError(f"--cycle {args.cycle}: not a known billing cycle")
    statuses = settings.sync.statuses
    settings.require("hostwinds.api_key", "database.url")
    async with open_resources(settings) as (client, pool):
        await require_schema(pool)
        store = Store(pool)
        instances = await client.get_instances()
        chosen, problems = resolve_targets(
            [args.instance], await store.read_identities(), instances, statuses
        )
        if problems:
            raise ConfigError("; ".join(f"--instance {t}: {why}" for t, why in problems.items()))
        rows = [row for row in await store.read_rows(statuses) if row.id in chosen]
        if len(rows) != 1:
            raise ConfigError(f"--instance {args.instance}: matches {len(rows)} rows; name one by its row id")
        ((row, instance),) = match_rows(rows, instances)
        if instance is None:
            services = matching.shared_server_uuids(instances).get(
                (row.hostwinds_instance_id or "").strip().lower()
            )
            why = (
                "the row matches no Hostwinds instance"
                if services is None
                else shared_uuid_unpriced(services).detail
            )
            raise CostSyncError(f"--instance {args.instance}: {why}")
        plans = await client.get_price_list(
            managed=settings.hostwinds.managed,
            drive_type=instance.disk_type,
            plan_key=settings.hostwinds.plan_key,
        )
    result = explain.quote(
        instance,
        plan=plans.get(args.plan),
        plan_id=args.plan,
        cycle=cycle.value if cycle else None,
        current=row.approximate_cost,
        aliases=settings.hostwinds.cycle_aliases,
    )
    data = result.as_json()
    data["row_id"] = str(row.id)
    data["hostwinds_instance_id"] = row.hostwinds_instance_id
    override = settings.overrides.get(override_key(row.hostwinds_instance_id))
    data["override"] = _money(override)
    if args.json:
        print(json.dumps(data, indent=2))
    elif data["monthly"] is None:
        print(
            terminal_text(f"plan {args.plan}: cannot be priced ({data['unpriced_reason']}: {data['detail']})")
        )
    else:
        print(
            f"{terminal_text(row.hostwinds_instance_id or row.id)} on plan {args.plan}, {data['cycle']}: "
            f"${data['monthly']} a month "
            f"({data['cycle_price']} / {data['months']}); now {render.money(row.approximate_cost)}"
            + (f", difference {data['difference']}" if data["difference"] is not None else "")
        )
        if override is not None:
            print(f"note: a Finance override ({override}) applies to this row; a run stores that instead")
    return 0 if data["monthly"] is not None else 1


#: Verb name -> handler, for :mod:`cost_sync.cli.main`.
HANDLERS: dict[str, Handler] = {
    "explain": _explain,
    "held": _held,
    "approve": _approve,
    "report": _report,
    "quote": _quote,
}
