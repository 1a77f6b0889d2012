"""The handlers of the verbs that let a person check every number: explain, held, approve, report, quote.

Their parsers are registered in :mod:`cost_sync.cli`, which imports this module only when one runs.

Guarantees: ``explain``, ``held`` and ``report`` read the database only (no Hostwinds call);
``quote`` reads Hostwinds and the database and writes nothing; ``approve`` re-checks each held
change against what a run would compute now (a dry run over the cache, read-only at Hostwinds)
and applies the ones that still stand in one transaction, under the run lock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from cost_sync import explain, guard, pricing, render, reporting
from cost_sync.db import create_pool
from cost_sync.errors import ConfigError, CostSyncError
from cost_sync.matching import match_rows, resolve_targets, shared_uuid_unpriced
from cost_sync.migrate import require_schema
from cost_sync.models import Estimate, PriceSource, RunReport, Unpriced, override_key
from cost_sync.redact import for_terminal, terminal_text
from cost_sync.reporting import HeldRow
from cost_sync.settings import Settings
from cost_sync.store import Store
from cost_sync.sync import open_resources, run_once, store_for
from cost_sync.trust_store import TrustStore

__all__ = ["HANDLERS"]

log = structlog.get_logger(__name__)

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


async def _one_row(trust: TrustStore, key: str) -> uuid.UUID:
    found = await trust.resolve(key)
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
        row_id = await _one_row(trust, args.id)
        row = await trust.row(row_id)
        if row is None:
            raise ConfigError(f"{args.id}: the row was deleted")
        history = await trust.history(row_id)
        state = await trust.row_state(row_id)
        observation = (
            await trust.observation(state.serviceid)
            if state is not None and state.serviceid is not None
            else None
        )
        held = await trust.held([row_id])
        fingerprint_instance = (
            explain.instance_from_fingerprint(state.serviceid, observation.fingerprint)
            if state is not None and state.serviceid is not None and observation is not None
            else None
        )
        # The price list a run would join this instance to now: the current settings' options.
        price_list = (
            await trust.price_list(
                settings.hostwinds.managed, fingerprint_instance.disk_type, settings.hostwinds.plan_key
            )
            if fingerprint_instance is not None
            else None
        )
    hw_id = (row.hostwinds_instance_id or "").strip()
    override = settings.overrides.get(override_key(hw_id))
    now = explain.compute_now(
        override=override,
        serviceid=state.serviceid if state else None,
        prices=observation.prices if observation else None,
        fingerprint=observation.fingerprint if observation else None,
        aliases=settings.hostwinds.cycle_aliases,
        plans=price_list.plans if price_list else None,
    )
    derived = [explain.derive(entry) for entry in history]
    spelled = fingerprint_instance.billingcycle if fingerprint_instance else None
    # An alias is a spelling that names no cycle itself ("Bi-Annually") mapped by the settings;
    # "Quarterly" normalising to quarterly is no alias.
    aliased = (
        settings.hostwinds.cycle_aliases.get(pricing.spelling_key(spelled))
        if spelled and pricing.normalise_cycle(spelled) is None
        else None
    )
    data: dict[str, Any] = {
        "row_id": str(row.row_id),
        "hostwinds_instance_id": row.hostwinds_instance_id,
        "status": row.status,
        "region": row.region,
        "approximate_cost": _money(row.approximate_cost),
        "monthly_cost": _money(row.monthly_cost),
        "match": None
        if state is None
        else {
            "matched": state.matched,
            "serviceid": state.serviceid,
            "server_uuid": state.server_uuid,
            "by": None
            if not state.matched
            else "serviceid"
            if hw_id.isascii() and hw_id.isdigit()
            else "server_uuid",
            "hostwinds_billingcycle": spelled,
            "cycle_alias": f"{derived[0]['cycle_alias']} -> {derived[0]['cycle']}"
            if derived and derived[0]["cycle_alias"]
            else f"{spelled} -> {aliased.value}"
            if aliased is not None
            else None,
            "unpriced_reason": state.unpriced_reason,
            "unpriced_detail": state.unpriced_detail,
        },
        "override": _money(override),
        "last_change": derived[0] if derived else None,
        "history": derived,
        "held": [h.as_json() for h in held],
        "now": _now_json(
            now,
            row.approximate_cost,
            observation.observed if observation else None,
            price_list.observed_at if price_list else None,
        ),
    }
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(for_terminal(_explain_text(data)))
    return 0


def _now_json(
    now: Estimate | Unpriced, stored: Any, observed: datetime | None, list_observed: datetime | None
) -> dict[str, Any]:
    if isinstance(now, Unpriced):
        return {"monthly": None, "differs": None, "reason": now.reason.value, "detail": now.detail}
    from_list = now.source is PriceSource.PRICE_LIST
    return {
        "monthly": str(now.monthly),
        "source": now.source.value,
        "fallback": now.fallback.value if now.fallback else None,
        "cycle": now.cycle.value if now.cycle else None,
        "cycle_price": _money(now.cycle_price),
        "months": now.months,
        "differs": now.monthly != stored,
        "observed": None if observed is None else observed.isoformat(),
        # When the cached price list it came from was read (price_list sources only).
        "price_list_observed": list_observed.isoformat() if from_list and list_observed else None,
    }


def _explain_text(data: dict[str, Any]) -> list[str]:
    lines = [
        f"row {data['row_id']} ({data['hostwinds_instance_id'] or 'no hostwinds_instance_id'}, "
        f"{data['status']}): approximate_cost {data['approximate_cost'] or 'null'}"
    ]
    match = data["match"]
    if match:
        lines.append(
            f"  matched: {'serviceid ' + str(match['serviceid']) if match['matched'] else 'no instance'}"
            + (f" by {match['by']}" if match["by"] else "")
            + (f"; cycle alias {match['cycle_alias']}" if match["cycle_alias"] else "")
            + (
                f"; unpriced: {match['unpriced_reason']} ({match['unpriced_detail']})"
                if match["unpriced_reason"]
                else ""
            )
        )
    if data["override"]:
        lines.append(f"  Finance override configured: {data['override']}")
    last = data["last_change"]
    if last is None:
        lines.append("  cost-sync never changed this row")
    else:
        lines.append(f"  last change: run {last['run_id']} at {last['at']}: {last['old']} -> {last['new']}")
        lines.append(
            f"    source {last['source']}"
            + (f" (fallback {last['fallback']})" if last["fallback"] else "")
            + (" (provisional)" if last["provisional"] else "")
            + (" (approved)" if last["approved"] else "")
            + (
                f", plan {last['product_id']} {last['product_name'] or ''}".rstrip()
                if last["product_id"]
                else ""
            )
            + (f", cycle {last['cycle']}" if last["cycle"] else "")
        )
        lines.append(f"    {last['rule']}")
        lines.append(
            f"    recomputed: {'reproduces the stored value' if last['reproduces'] else 'DOES NOT reproduce'}"
        )
    if data["history"]:
        lines.append("  history (newest first):")
        rows = [
            [
                h["at"][:19],
                h["old"] or "-",
                h["new"],
                h["source"]
                + (f" fallback {h['fallback']}" if h["fallback"] else "")
                + (" provisional" if h["provisional"] else "")
                + (" approved" if h["approved"] else ""),
                h["cycle"] or "-",
                h["cycle_price"] or "-",
                str(h["months"] or "-"),
            ]
            for h in data["history"]
        ]
        lines += [
            "    " + line
            for line in render.table(["at", "old", "new", "source", "cycle", "price", "months"], rows)
        ]
    for h in data["held"]:
        lines.append(f"  held: {h['old']} -> {h['proposed']} since {h['since']} ({h['reason']})")
    now = data["now"]
    if now["monthly"] is None:
        lines.append(f"  now: not computable from the cache alone: {now['detail']} ({now['reason']})")
    elif now["differs"]:
        lines.append(
            f"  now: a run would compute {now['monthly']} from the cached prices ({now['source']}"
            + (f", fallback {now['fallback']}" if now["fallback"] else "")
            + ")"
        )
    else:
        lines.append("  now: a run would compute the same value from the cached prices")
    return lines


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
            ids: list[uuid.UUID] = []
            for key in args.instance:
                row_id = await _one_row(trust, key)
                ids.append(row_id)
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
                    trigger="approve",
                    targets=[str(h.row_id) for h in shown],
                    dry_run=True,
                    strict_targets=False,
                    accept_changes=True,
                    run_id=run_id,
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
    async with _database(settings) as pool:
        trust = TrustStore(pool)
        rows = await trust.report_rows(settings.sync.statuses)
        held = await trust.held()
        oldest = await trust.oldest_observation()
        last_run = await trust.last_fleet_run()
    data = reporting.build_report(
        rows, held, oldest_observation=oldest, generated_at=datetime.now(UTC), last_run=last_run
    )
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.csv:
        print(reporting.report_csv(data), end="")
    else:
        print(for_terminal(_report_text(data)))
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
            services = pricing.shared_server_uuids(instances).get(
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


#: Verb name -> handler, for :mod:`cost_sync.cli`.
HANDLERS: dict[str, Handler] = {
    "explain": _explain,
    "held": _held,
    "approve": _approve,
    "report": _report,
    "quote": _quote,
}
