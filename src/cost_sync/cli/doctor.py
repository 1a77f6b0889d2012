"""`cost-sync doctor`: read-only checks, in order, of what a first run against an account rests on.

Each check ends ``pass``, ``warn`` or ``fail`` with one line of evidence and, when something is
wrong, the fix. Guarantees: nothing is written to the database (the session is read-only);
Hostwinds is asked read-only actions only; no secret (the API key, the database password,
Hostwinds passwords or config keys) is in any check, in the JSON, or in a capture. With a capture
directory, every answer a full sync needs is asked and written there (:mod:`cost_sync.hostwinds.capture`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx

from cost_sync import __version__
from cost_sync.domain import matching, pricing
from cost_sync.domain.models import Cycle, Instance, Plan, PriceList, VpsRow
from cost_sync.errors import (
    ConfigError,
    CostSyncError,
    HostwindsAuthError,
    HostwindsError,
    HostwindsErrorEnvelope,
)
from cost_sync.hostwinds.answers import PlanKey, read_cycle_prices, read_instances, read_price_list, unwrap
from cost_sync.hostwinds.capture import Answer, CaptureError, write_capture
from cost_sync.hostwinds.client import HostwindsClient, price_list_params
from cost_sync.settings import CONFIG_ENV, Settings, load_settings
from cost_sync.store.db import connect, describe_dsn
from cost_sync.store.migrate import MIGRATE_HINT, NO_PLATFORM_TABLE, check, discover
from cost_sync.store.sqlfiles import queries
from cost_sync.wiring import open_hostwinds

__all__ = ["DEFAULT_SAMPLE", "NEEDED_COLUMNS", "Check", "DoctorReport", "Status", "run_doctor"]

Status = Literal["pass", "warn", "fail"]

#: The vps_instances columns cost-sync reads or writes.
NEEDED_COLUMNS = ("id", "hostwinds_instance_id", "status", "approximate_cost", "updated")
#: Services whose get_billingcycle_prices answers doctor reads without --capture.
DEFAULT_SAMPLE = 5
_EXAMPLES = 5
_REPORT_IT = "capture the answers (--capture DIR) and report them"
# What an unknown spelling most likely means, per the public material (docs/hostwinds-api.md).
_LIKELY: dict[str, str] = {"biannually": "semiannually"}


@dataclass(frozen=True)
class Check:
    """One check's verdict, its evidence in one line, and the fix when it is not a pass."""

    name: str
    status: Status
    evidence: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        """The check for ``--json``."""
        return {"name": self.name, "status": self.status, "evidence": self.evidence, "fix": self.fix}


@dataclass
class DoctorReport:
    """Every check in order; ``ok`` when none failed."""

    checks: list[Check] = field(default_factory=list)
    capture: str | None = None

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed): the exit code is 0."""
        return all(c.status != "fail" for c in self.checks)

    def add(self, name: str, status: Status, evidence: str, fix: str = "") -> None:
        """Record one check."""
        self.checks.append(Check(name, status, evidence, fix))

    def as_json(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "ok": self.ok,
            "version": __version__,
            "checks": [c.as_json() for c in self.checks],
            "capture": self.capture,
        }

    def lines(self) -> list[str]:
        """The report for people: one line per check, the fix under it."""
        width = max((len(c.name) for c in self.checks), default=0)
        out = ["cost-sync doctor (read-only)"]
        for c in self.checks:
            out.append(f"  {c.status:<4}  {c.name:<{width}}  {c.evidence}")
            if c.fix:
                out.append(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
        counts = Counter(c.status for c in self.checks)
        out.append(f"{counts['fail']} failed, {counts['warn']} warnings, {counts['pass']} passed")
        if self.capture:
            out.append(f"capture written to {self.capture}")
        return out


@dataclass
class _Database:
    rows: list[VpsRow] | None = None
    identities: list[str | None] | None = None


async def run_doctor(
    config_path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    capture_dir: Path | None = None,
    sample: int = DEFAULT_SAMPLE,
) -> DoctorReport:
    """Run every check in order and return the report; never raises a CostSyncError."""
    report = DoctorReport()
    try:
        settings = load_settings(config_path, environ)
    except ConfigError as exc:
        report.add("settings", "fail", str(exc), "correct the setting named above")
        return report
    hw = settings.hostwinds
    aliases = ", ".join(f"{k} -> {v.value}" for k, v in hw.cycle_aliases.items()) or "none"
    source = config_path or (os.environ if environ is None else environ).get(CONFIG_ENV) or "environment only"
    report.add(
        "settings",
        "pass",
        f"loaded ({source}); plan_key {hw.plan_key!r}; managed {int(hw.managed)}; cycle aliases: {aliases}",
    )
    database = await _database_checks(report, settings)
    if hw.api_key is None:
        report.add(
            "hostwinds",
            "fail",
            "no API key is set",
            "set COST_SYNC_HOSTWINDS_API_KEY or COST_SYNC_HOSTWINDS_API_KEY_FILE",
        )
        if capture_dir is not None:
            report.add("capture", "fail", "nothing to capture without an API key", "set the key")
        return report
    async with open_hostwinds(settings, purpose="doctor") as client:
        await _hostwinds_checks(report, settings, client, database, capture_dir=capture_dir, sample=sample)
    return report


async def _database_checks(report: DoctorReport, settings: Settings) -> _Database:
    database = _Database()
    try:
        dsn = settings.database_dsn()
    except ConfigError as exc:
        report.add("database", "fail", str(exc), "set COST_SYNC_DATABASE_URL")
        return database
    try:
        conn = await connect(
            dsn,
            timeout=settings.database.connect_timeout_seconds,
            statement_cache_size=settings.database.statement_cache_size,
        )
    except CostSyncError as exc:
        report.add("database", "fail", str(exc), "check COST_SYNC_DATABASE_URL and that PostgreSQL is up")
        return database
    try:
        q = queries("doctor")
        version = await conn.fetchval(q["server_version"])
        report.add("database", "pass", f"PostgreSQL {version} answers at {describe_dsn(dsn)}")
        # Before doctor makes its own session read-only: what a run's session would be.
        await _writes_check(report, conn)
        # A read-only transaction, not a session setting: doctor cannot write, whatever a check's
        # SQL does, and through a pooler in transaction mode nothing of it outlives the checks.
        await conn.execute("BEGIN READ ONLY")
        columns = {r["column_name"] for r in await conn.fetch(q["vps_columns"])}
        missing = [c for c in NEEDED_COLUMNS if c not in columns]
        if not columns:
            report.add(
                "vps_instances",
                "fail",
                NO_PLATFORM_TABLE,
                "point COST_SYNC_DATABASE_URL at the platform's database (not `cost-sync migrate`: "
                "it cannot create the platform's table)",
            )
            report.add("migrations", "fail", "not checked: no vps_instances table", "fix the check above")
            return database
        elif missing:
            report.add(
                "vps_instances",
                "fail",
                f"missing column(s): {', '.join(missing)}",
                "run `cost-sync migrate`" if missing == ["approximate_cost"] else "check the database",
            )
        else:
            count = await conn.fetchval(q["row_count"])
            report.add("vps_instances", "pass", f"has {', '.join(NEEDED_COLUMNS)}; {count} rows")
        problems = await check(conn)
        total = len(discover())
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            report.add("migrations", "fail", f"{problems[0]}{more}", MIGRATE_HINT)
        else:
            report.add("migrations", "pass", f"all {total} migrations applied and verified")
        if not missing and columns:
            sync = queries("sync")
            records = await conn.fetch(sync["read_rows"], list(settings.sync.statuses))
            database.rows = [
                VpsRow(r["id"], r["hostwinds_instance_id"], r["status"], r["approximate_cost"])
                for r in records
            ]
            database.identities = [
                r["hostwinds_instance_id"] for r in await conn.fetch(sync["read_identities"])
            ]
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        report.add("database", "fail", f"a read failed: {type(exc).__name__}", "check the database")
    except CostSyncError as exc:  # a migration file that cannot be read, say
        report.add("migrations", "fail", str(exc), "reinstall cost-sync")
    finally:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            if not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("ROLLBACK")
        await conn.close()
    return database


#: What a run writes: (table, privileges it needs on it).
_WRITES = (
    ("vps_instances", ("UPDATE",)),
    ("cost_sync_runs", ("INSERT", "UPDATE")),
    ("cost_sync_lease", ("UPDATE",)),
    ("cost_sync_history", ("INSERT",)),
    ("cost_sync_price_observations", ("INSERT", "UPDATE")),
    ("cost_sync_price_lists", ("INSERT", "UPDATE")),
    ("cost_sync_row_state", ("INSERT", "UPDATE")),
    ("cost_sync_held_changes", ("INSERT", "UPDATE", "DELETE")),
)


async def _writes_check(report: DoctorReport, conn: asyncpg.Connection) -> None:
    """Whether a run could write, without writing: read-write sessions, not a standby, privileges."""
    q = queries("doctor")
    if await conn.fetchval(q["in_recovery"]):
        report.add(
            "writes",
            "fail",
            "the database is a hot standby (read-only replica): every run would fail at its write",
            "point COST_SYNC_DATABASE_URL at the primary",
        )
        return
    if await conn.fetchval(q["read_only_sessions"]) == "on":
        report.add(
            "writes",
            "fail",
            "sessions are read-only (default_transaction_read_only = on for this database or user): "
            "every run would fail at its write",
            "ALTER DATABASE / ALTER ROLE ... SET default_transaction_read_only = off, or use a writable user",
        )
        return
    missing = []
    for table, privileges in _WRITES:
        if await conn.fetchval(q["table_exists"], table) is None:
            continue  # a missing table is the vps_instances or migrations check's to report
        for privilege in privileges:
            if not await conn.fetchval(q["has_privilege"], table, privilege):
                missing.append(f"{privilege} on {table}")
    if missing:
        report.add(
            "writes",
            "fail",
            f"this user lacks {', '.join(missing)}: every run would fail at its write",
            "GRANT those privileges to the user in COST_SYNC_DATABASE_URL",
        )
        return
    report.add(
        "writes", "pass", "read-write sessions on a primary; the privileges a run's write needs are held"
    )


async def _hostwinds_checks(
    report: DoctorReport,
    settings: Settings,
    client: HostwindsClient,
    database: _Database,
    *,
    capture_dir: Path | None,
    sample: int,
) -> None:
    answers: list[Answer] = []
    try:
        await _ask_and_read(
            report, settings, client, database, answers, capture=capture_dir is not None, sample=sample
        )
    finally:
        # Also (above all) when a shape was unreadable: the capture is what to report.
        if capture_dir is not None:
            _write(report, settings, capture_dir, answers)


def _write(report: DoctorReport, settings: Settings, capture_dir: Path, answers: Sequence[Answer]) -> None:
    hw = settings.hostwinds
    if not answers:
        report.add("capture", "fail", "nothing to capture: Hostwinds gave no answer", "fix the checks above")
        return
    key_text = hw.api_key.get_secret_value() if hw.api_key else ""
    try:
        path = write_capture(capture_dir, answers, secrets=[key_text], source=httpx.URL(hw.url).host)
    except CaptureError as exc:
        report.add(
            "capture",
            "fail",
            str(exc),
            "choose a new or empty, writable directory; a capture that holds a secret is never written",
        )
        return
    report.capture = str(capture_dir)
    report.add("capture", "pass", f"{len(answers)} answers and {path.name} written to {capture_dir}")


async def _ask_and_read(
    report: DoctorReport,
    settings: Settings,
    client: HostwindsClient,
    database: _Database,
    answers: list[Answer],
    *,
    capture: bool,
    sample: int,
) -> None:
    hw = settings.hostwinds
    host = httpx.URL(hw.url).host
    try:
        body = await client.sanitised_body("get_instances")
    except HostwindsAuthError as exc:
        report.add(
            "hostwinds",
            "fail",
            f"{host}: {exc}",
            "renew the key, or add this host's IPv4 address to the key's allow-list in the portal",
        )
        return
    except HostwindsError as exc:
        report.add("hostwinds", "fail", f"{host}: {exc}", "check hostwinds.url and the network")
        return
    report.add("hostwinds", "pass", f"{host} answered over IPv4 and accepted the key")
    answers.append(Answer("get_instances", {}, body))
    try:
        instances = read_instances(unwrap(body))
    except HostwindsError as exc:
        report.add("get_instances", "fail", str(exc), _REPORT_IT)
        return
    report.add("get_instances", "pass", f"{_shape(body)}: {len(instances)} instances read")

    # Which instances a sync would price: matched rows in scope, else (no database) all of them.
    matches = None
    if database.rows is not None:
        matches = matching.match_rows(database.rows, instances)
        wanted = matching.wanted_instances(matches, settings.overrides)
    else:
        wanted = {i.serviceid: i for i in instances}
    considered = list(wanted.values()) or instances

    lists_by_id: dict[matching.PriceListKey, PriceList] = {}
    lists_by_rid: dict[matching.PriceListKey, dict[int, Plan]] = {}
    keys = sorted({(hw.managed, i.disk_type) for i in considered}, key=lambda k: k[1] or "")
    shapes: list[str] = []
    failures: list[str] = []
    skipped: list[str] = []
    for key in keys:
        params = price_list_params(managed=key[0], drive_type=key[1])
        label = f"managed={int(key[0])} drive_type={key[1] or '(default)'}"
        try:
            plist = await client.sanitised_body("get_price_list", **params)
        except HostwindsError as exc:
            failures.append(f"{label}: {exc}")
            continue
        answers.append(Answer("get_price_list", {k: str(v) for k, v in params.items()}, plist))
        try:
            lists_by_id[key] = read_price_list(unwrap(plist), plan_key="id")
            lists_by_rid[key] = read_price_list(unwrap(plist), plan_key="rid")
        except HostwindsError as exc:
            failures.append(f"{label}: {exc}")
            continue
        shapes.append(f"{label}: {_shape(plist)}, {len(lists_by_id[key])} rows")
        skipped.extend(f"{label}: {row.describe()}" for row in lists_by_id[key].unreadable)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        report.add("get_price_list", "fail", f"{failures[0]}{more}", _REPORT_IT)
    elif skipped:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        report.add(
            "get_price_list",
            "warn",
            f"{'; '.join(shapes)}; price_list_row_unreadable: {skipped[0]}{more}",
            "instances on those plans are priced from their own cycle prices, else unpriced "
            f"(plan_unreadable, custom_plan); {_REPORT_IT}",
        )
    else:
        report.add("get_price_list", "pass", "; ".join(shapes) or "no instance needs a price list")

    await _cycle_price_check(report, client, wanted, answers, capture=capture, sample=sample)
    if matches is not None and database.identities is not None:
        _matching_check(report, matches, instances, database.identities)
    else:
        report.add("matching", "warn", "not checked: vps_instances could not be read")
    _cycle_check(report, considered, hw.cycle_aliases)
    if not failures:
        _plan_join_check(
            report, considered, lists_by_id, lists_by_rid, managed=hw.managed, plan_key=hw.plan_key
        )
    else:
        report.add("plan_join", "warn", "not checked: a price list could not be read")


async def _cycle_price_check(
    report: DoctorReport,
    client: HostwindsClient,
    wanted: Mapping[int, Instance],
    answers: list[Answer],
    *,
    capture: bool,
    sample: int,
) -> None:
    asked = sorted(wanted) if capture else sorted(wanted)[:sample]
    keyed: Counter[str] = Counter()
    empty = 0
    errors: list[str] = []
    unreadable: list[str] = []
    for serviceid in asked:
        try:
            body = await client.sanitised_body("get_billingcycle_prices", serviceid=serviceid)
        except HostwindsAuthError as exc:
            errors.append(f"service {serviceid}: {exc}")
            break
        except HostwindsError as exc:
            errors.append(str(exc))
            if isinstance(exc, HostwindsErrorEnvelope) and exc.answer is not None:
                # Kept: a replay answers this service with the same envelope, at the same status.
                answers.append(
                    Answer("get_billingcycle_prices", {"serviceid": str(serviceid)}, exc.answer, exc.status)
                )
            continue
        answers.append(Answer("get_billingcycle_prices", {"serviceid": str(serviceid)}, body))
        try:
            cells = read_cycle_prices(serviceid, unwrap(body))
        except HostwindsError as exc:
            unreadable.append(str(exc))
            continue
        if cells:
            keyed.update(c.value for c in cells)
        else:
            empty += 1
    if not asked:
        report.add("get_billingcycle_prices", "warn", "not asked: no matched instance to ask about")
        return
    priced = len(asked) - len(errors) - len(unreadable) - empty
    evidence = (
        f"asked {len(asked)} service(s): {priced} answered cycle prices"
        + (f" ({', '.join(sorted(keyed))})" if keyed else "")
        + f", {empty} answered {{}} (documented; such rows are priced from the price list)"
    )
    if unreadable:
        report.add(
            "get_billingcycle_prices",
            "fail",
            f"{len(unreadable)} of {len(asked)} answer(s) not read, first: {unreadable[0]}",
            f"{_REPORT_IT}: the client does not read this shape",
        )
    elif errors and len(errors) == len(asked) and len({_SERVICE_ID.sub("service N", e) for e in errors}) == 1:
        cause, fix = _everywhere_cause(errors[0])
        report.add(
            "get_billingcycle_prices",
            "fail",
            f"cycle_prices_unavailable_everywhere: all {len(asked)} service(s) asked answered the same "
            f"error: {errors[0]}; likely cause: {cause}",
            f"{fix}; meanwhile every row is priced from the price list (fallback cycle_prices_error), "
            "so check the plan_join check below",
        )
    elif errors:
        report.add(
            "get_billingcycle_prices",
            "warn",
            f"{evidence}; {len(errors)} error(s), first: {errors[0]}",
            "those rows are priced from the price list (fallback cycle_prices_error) until Hostwinds "
            "answers; with no price-list plan they stay unpriced (cycle_prices_unavailable)",
        )
    else:
        report.add("get_billingcycle_prices", "pass", evidence)


_SERVICE_ID = re.compile(r"service \d+")


def _everywhere_cause(error: str) -> tuple[str, str]:
    """The likely cause and fix of one error every service's get_billingcycle_prices answered."""
    text = error.lower()
    if "invalid action" in text:
        return (
            "this account or key does not offer get_billingcycle_prices",
            "ask Hostwinds to enable get_billingcycle_prices for this API key",
        )
    if "serviceid" in text:
        return (
            "Hostwinds does not take these service ids for get_billingcycle_prices "
            "(another account's key, or the action wants another id)",
            "check that COST_SYNC_HOSTWINDS_API_KEY is the key of the account that owns these "
            f"instances; if it is, {_REPORT_IT}",
        )
    return ("the action fails for the whole account", _REPORT_IT)


def _matching_check(
    report: DoctorReport,
    matches: Sequence[matching.Match],
    instances: Sequence[Instance],
    identities: Sequence[str | None],
) -> None:
    by_serviceid = by_uuid = 0
    not_found: list[str] = []
    ambiguous: list[str] = []
    shared = matching.shared_server_uuids(instances)
    no_id = 0
    for row, instance in matches:
        key = (row.hostwinds_instance_id or "").strip()
        if not key:
            no_id += 1
        elif instance is None and key.lower() in shared:
            ambiguous.append(key)
        elif instance is None:
            not_found.append(key)
        elif matching.names_serviceid(key):
            by_serviceid += 1
        else:
            by_uuid += 1
    index_sid, index_uuid = matching.index_instances(instances)
    owned: set[int] = set()
    for hw_id in identities:
        found = matching.match_instance(hw_id, by_serviceid=index_sid, by_uuid=index_uuid)
        if found is not None:
            owned.add(found.serviceid)
    orphans = sorted(i.serviceid for i in instances if i.serviceid not in owned)
    evidence = (
        f"{len(matches)} rows in scope: {by_serviceid} by serviceid, {by_uuid} by server_uuid, "
        f"{len(not_found)} not found{_examples(not_found)}, {no_id} without hostwinds_instance_id; "
        f"{len(orphans)} Hostwinds instance(s) with no row{_examples([str(s) for s in orphans])}"
    )
    if shared:
        services = sorted({sid for sids in shared.values() for sid in sids})
        evidence += (
            f"; {len(shared)} server_uuid(s) on more than one service id"
            f"{_examples([str(s) for s in services])}, naming {len(ambiguous)} row(s)"
        )
    if ambiguous:
        report.add(
            "matching",
            "warn",
            evidence,
            "a row keyed by a server_uuid several services carry stays unpriced (duplicate_instance); "
            "set its hostwinds_instance_id to the serviceid",
        )
    elif not_found or no_id or orphans:
        report.add(
            "matching",
            "warn",
            evidence,
            "rows not found stay unpriced (value kept); check their hostwinds_instance_id",
        )
    else:
        report.add("matching", "pass", evidence)


def _cycle_check(report: DoctorReport, instances: Sequence[Instance], aliases: Mapping[str, Cycle]) -> None:
    spellings: Counter[str] = Counter()
    for instance in instances:
        spellings["hourly" if instance.hourly else (instance.billingcycle or "(none)")] += 1
    parts: list[str] = []
    unknown: list[str] = []
    for spelling, count in spellings.most_common():
        if spelling == "hourly" or pricing.normalise_cycle(spelling) is not None:
            parts.append(f"{spelling} {count}")
            continue
        alias = aliases.get(pricing.spelling_key(spelling)) if spelling != "(none)" else None
        if alias is not None:
            parts.append(f"{spelling} {count} (alias: {alias.value})")
        else:
            parts.append(f"{spelling} {count} (unknown)")
            unknown.append(spelling)
    evidence = ", ".join(parts) or "no instances"
    if unknown:
        hints = ", ".join(
            f'"{s}" = "{_LIKELY.get(pricing.spelling_key(s), "<cycle>")}"' for s in unknown if s != "(none)"
        )
        report.add(
            "cycles",
            "warn",
            f"{evidence}; unpriced (unknown_cycle) until aliased: {', '.join(unknown)}",
            f"confirm each on an invoice, then add to [hostwinds.cycle_aliases]: {hints}"
            if hints
            else "instances without a billing cycle stay unpriced",
        )
    else:
        report.add("cycles", "pass", evidence)


def _plan_join_check(
    report: DoctorReport,
    instances: Sequence[Instance],
    lists_by_id: Mapping[matching.PriceListKey, Mapping[int, Plan]],
    lists_by_rid: Mapping[matching.PriceListKey, Mapping[int, Plan]],
    *,
    managed: bool,
    plan_key: PlanKey,
) -> None:
    with_product = [i for i in instances if i.product_id is not None]
    n = len(with_product)
    tally: dict[str, list[int]] = {"id": [0, 0], "rid": [0, 0]}
    for key, lists in (("id", lists_by_id), ("rid", lists_by_rid)):
        for instance in with_product:
            plan = matching.joined_plan(instance, lists, managed=managed)
            if plan is None:
                continue
            tally[key][0] += 1
            if matching.plan_names_agree(instance.product_name, plan.name):
                tally[key][1] += 1
    evidence = (
        f"product_id matches `id` for {tally['id'][0]} of {n} instances and the names agree for "
        f"{tally['id'][1]}; matches `rid` for {tally['rid'][0]} and the names agree for {tally['rid'][1]}"
    )
    score_id, score_rid = (tally["id"][1], tally["id"][0]), (tally["rid"][1], tally["rid"][0])
    if n == 0:
        report.add("plan_join", "warn", "no instance has a product_id")
        return
    supported: PlanKey | None = None if score_id == score_rid else "id" if score_id > score_rid else "rid"
    if max(score_id[1], score_rid[1]) == 0:
        report.add(
            "plan_join",
            "fail",
            evidence,
            f"neither field joins: {_REPORT_IT}; rows without their own cycle prices stay "
            "unpriced (plan_not_found)",
        )
    elif supported is None:
        report.add(
            "plan_join",
            "warn",
            f"{evidence}; the data does not tell id from rid (plan_key {plan_key!r} kept)",
        )
    elif supported != plan_key:
        report.add(
            "plan_join",
            "fail",
            f"{evidence}; the data supports `{supported}`, plan_key is {plan_key!r}",
            f'set [hostwinds] plan_key = "{supported}" (COST_SYNC_HOSTWINDS_PLAN_KEY={supported})',
        )
    elif tally[plan_key][1] < n:
        report.add(
            "plan_join",
            "warn",
            f"{evidence}; plan_key {plan_key!r} is supported, some names differ or do not join",
            "each run logs sync.plan_name_disagrees: compare those plans with the portal",
        )
    else:
        report.add("plan_join", "pass", f"{evidence}; plan_key {plan_key!r} is supported")


def _examples(items: Sequence[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_EXAMPLES])
    return f" ({shown}{', ...' if len(items) > _EXAMPLES else ''})"


def _shape(body: Any) -> str:
    """A body's container shape, never its values: ``{"success": [...]} of 12``."""
    if isinstance(body, dict) and "success" in body:
        inner = body["success"]
        if isinstance(inner, list):
            return f'{{"success": [...]}} of {len(inner)}'
        if isinstance(inner, dict):
            return f'{{"success": {{...}}}} with {len(inner)} key(s)'
        return '{"success": <scalar>}'
    if isinstance(body, list):
        return f"a bare list of {len(body)}"
    if isinstance(body, dict):
        return f"a bare object with {len(body)} key(s)"
    return "a scalar"
