"""``cost-sync quote``: what an instance would cost on another plan or cycle; writes nothing."""

from __future__ import annotations

import argparse
import json

from cost_sync.cli import render
from cost_sync.domain import explain, matching, pricing
from cost_sync.domain.matching import match_rows, resolve_targets, shared_uuid_unpriced
from cost_sync.domain.models import override_key
from cost_sync.domain.redact import terminal_text
from cost_sync.errors import ConfigError, CostSyncError
from cost_sync.settings import Settings
from cost_sync.store.migrate import require_schema
from cost_sync.store.postgres import Store
from cost_sync.wiring import open_resources


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
    data["override"] = None if override is None else str(override)
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
