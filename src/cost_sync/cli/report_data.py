"""What ``explain`` and ``report --html`` read: one row's explanation, and everything the HTML page shows.

Guarantees: database only (no Hostwinds call); the page's figures are built by the same functions
as ``report --json`` (:func:`cost_sync.domain.reporting.build_report`) and ``attribution --json``
(:func:`cost_sync.cli.attribution_render.as_dict`), so each number on it equals theirs for the moment
it was read. Never opens or closes a pool.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg

from cost_sync.cli import attribution_render, render
from cost_sync.domain import explain, matching, pricing, reporting
from cost_sync.domain.fingerprint import instance_from_fingerprint
from cost_sync.domain.models import Estimate, PriceSource, Unpriced, override_key
from cost_sync.domain.reporting import ReportRow
from cost_sync.errors import ConfigError, CostSyncError
from cost_sync.settings import Settings
from cost_sync.store import attribution as attribution_store
from cost_sync.store.trust import TrustStore

__all__ = ["explain_row", "explain_text", "html_data", "report_json"]

#: How many of the period's largest changes the page lists, each with its explanation.
LARGEST = 10


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


async def report_json(
    trust: TrustStore, settings: Settings, now: datetime, rows: Sequence[ReportRow] | None = None
) -> dict[str, Any]:
    """``report --json``'s object, read now (over ``rows`` when the caller read them already)."""
    if rows is None:
        rows = await trust.report_rows(settings.sync.statuses)
    held = await trust.held()
    oldest = await trust.oldest_observation()
    last_run = await trust.last_fleet_run()
    return reporting.build_report(rows, held, oldest_observation=oldest, generated_at=now, last_run=last_run)


async def explain_row(trust: TrustStore, settings: Settings, row_id: uuid.UUID) -> dict[str, Any]:
    """``explain --json``'s object for one row (ConfigError if the row was deleted)."""
    row = await trust.row(row_id)
    if row is None:
        raise ConfigError(f"{row_id}: the row was deleted")
    history = await trust.history(row_id)
    state = await trust.row_state(row_id)
    observation = (
        await trust.observation(state.serviceid)
        if state is not None and state.serviceid is not None
        else None
    )
    held = await trust.held([row_id])
    fingerprint_instance = (
        instance_from_fingerprint(state.serviceid, observation.fingerprint)
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
    return {
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
            if matching.names_serviceid(hw_id)
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


def explain_text(data: dict[str, Any]) -> list[str]:
    """``explain``'s text for people, from :func:`explain_row`'s object."""
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


async def html_data(pool: asyncpg.Pool, settings: Settings, *, since: date, now: datetime) -> dict[str, Any]:
    """Everything ``report --html`` shows, read from the database now.

    ``report`` and ``attribution`` are ``report --json``'s and ``attribution --json``'s objects;
    attribution that cannot be read (the platform's tenant tables missing) is left out with the
    reason in ``attribution_error`` rather than failing the page.
    """
    trust = TrustStore(pool)
    rows = await trust.report_rows(settings.sync.statuses)
    report = await report_json(trust, settings, now, rows)
    attribution: dict[str, Any] | None = None
    attribution_error: str | None = None
    try:
        attribution = attribution_render.as_dict(await attribution_store.compute(pool, settings))
    except CostSyncError as exc:
        attribution_error = exc.message
    start = datetime.combine(since, time.min, tzinfo=UTC)
    changes = await trust.history_since(settings.sync.statuses, start)
    try:
        days = await trust.tenant_days(since)
    except CostSyncError:
        days = []
    largest = reporting.largest_changes(changes, LARGEST)
    explanations: dict[str, list[str]] = {}
    for change in largest:
        row_id = change["row_id"]
        if row_id not in explanations:
            explanations[row_id] = explain_text(await explain_row(trust, settings, uuid.UUID(row_id)))
    return {
        "since": since.isoformat(),
        "report": report,
        "attribution": attribution,
        "attribution_error": attribution_error,
        "fleet_daily": reporting.fleet_daily(report, changes, since=since, until=now.astimezone(UTC).date()),
        "runs": reporting.runs_in_period(changes),
        "tenants_over_time": reporting.tenant_series(days, attribution),
        "largest_changes": largest,
        "explanations": explanations,
        "provisional_rows": [
            r.hostwinds_instance_id or str(r.row_id)
            for r in rows
            if r.provisional and r.approximate_cost is not None
        ],
        "statuses": list(settings.sync.statuses),
        "keep_days": settings.attribution.keep_days,
    }
