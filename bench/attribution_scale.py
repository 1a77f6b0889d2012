"""Tenant attribution at scale: read + allocate, and the snapshot write, against a real PostgreSQL.

    python bench/attribution_scale.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

For N = 1,000 and 10,000 VPS (3 SMTP IPs each, one idle in ten, N / 5 tenants, two tenants'
domains on each IP, a cost_sync_history and a cost_sync_row_state row per VPS, one in fifty left
unpriced by the last run), in a fresh database each, it times
``attribution_store.compute`` and ``store_snapshot`` (best of three) beside the floor of reading
the same rows with one raw query, and prints the ratios. The database is dropped afterwards.

``x floor`` is compute against the raw read as any caller makes it; ``x bare`` against the raw
read with the cyclic garbage collector paused and JIT off, as compute reads: the stricter floor.
The target (issue 20) is ``x floor`` under 2 at 100,000 VPS:

    python bench/attribution_scale.py --database-url ... --sizes 100000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cost_sync.domain.gc_pause import gc_paused
from cost_sync.runtime import logs
from cost_sync.settings import Settings
from cost_sync.store import attribution as attribution_store
from cost_sync.store.migrate import migrate, sql_dir

SEED = """
INSERT INTO vps_instances (id, hostwinds_instance_id, status, approximate_cost)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(v), 12, '0'))::uuid, v::text, 'active', 4.99 + (v % 7)
FROM generate_series(1, $1) v;
INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, new_cost, source)
SELECT gen_random_uuid(), id, hostwinds_instance_id, approximate_cost, 'price_list' FROM vps_instances;
INSERT INTO cost_sync_row_state (vps_instance_id, matched, serviceid, unpriced_reason, run_id)
SELECT id, v % 50 <> 0, v, CASE WHEN v % 50 = 0 THEN 'not_found' END, gen_random_uuid()
FROM (SELECT id, hostwinds_instance_id::bigint AS v FROM vps_instances) r;
INSERT INTO tenants (id, name)
SELECT ('00000000-0000-0000-0001-' || lpad(to_hex(t), 12, '0'))::uuid, 'tenant ' || t
FROM generate_series(1, greatest($1 / 5, 1)) t;
INSERT INTO domains (id, tenant_id, domain) SELECT id, id, name || '.example' FROM tenants;
INSERT INTO smtp_ip_addresses (id, vps_instance_id, ip_address, status)
SELECT gen_random_uuid(), v.id, '192.0.2.' || i, CASE WHEN (v.hostwinds_instance_id::int + i) % 10 = 0
       THEN 'idle' ELSE 'active' END
FROM vps_instances v, generate_series(1, 3) i;
INSERT INTO domain_ip_assignments (domain_id, smtp_ip_address_id, status)
SELECT d.id, s.id, 'active'
FROM (SELECT s.id, row_number() OVER (ORDER BY s.id) AS n FROM smtp_ip_addresses s) s
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS c FROM domains) d
  ON d.k IN (s.n % d.c, (s.n * 7 + 3) % d.c);
ANALYZE;
"""

FLOOR = """
SELECT v.id, v.approximate_cost, s.id, s.status, d.tenant_id, a.status
FROM vps_instances v
LEFT JOIN smtp_ip_addresses s ON s.vps_instance_id = v.id
LEFT JOIN domain_ip_assignments a ON a.smtp_ip_address_id = s.id
LEFT JOIN domains d ON d.id = a.domain_id
WHERE v.status = 'active'
"""


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def best_of(runs: int, work: object) -> float:
    """The shortest wall time of ``runs`` awaits of ``work()``, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()  # type: ignore[operator]
        times.append(time.perf_counter() - start)  # float-ok: a duration
    return min(times)


async def bare_floor(pool: asyncpg.Pool) -> None:
    """The raw read as compute makes it: JIT off, the cyclic garbage collector paused."""
    with gc_paused():
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute("SET LOCAL jit = off")
            await conn.fetch(FLOOR)


async def measure(server_url: str, n: int) -> dict[str, float]:
    """Seed N VPS in a fresh database and time the floor, compute and the snapshot write."""
    name = f"cs_bench_attr_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        conn = await asyncpg.connect(url)
        fixtures = sql_dir() / "fixtures"
        await conn.execute((fixtures / "vps_instances.sql").read_text())
        await conn.execute((fixtures / "tenants.sql").read_text())
        await migrate(conn)
        await conn.execute(SEED.replace("$1", str(n)))
        await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        assert pool is not None
        settings = Settings()
        try:
            floor = await best_of(3, lambda: pool.fetch(FLOOR))
            bare = await best_of(3, lambda: bare_floor(pool))
            compute = await best_of(3, lambda: attribution_store.compute(pool, settings, snapshot=True))
            report = await attribution_store.compute(pool, settings, snapshot=True)
            write = await best_of(3, lambda: attribution_store.store_snapshot(pool, report))
            rows = await pool.fetchval("SELECT count(*) FROM cost_sync_tenant_costs")
        finally:
            await pool.close()
        return {"floor": floor, "bare": bare, "compute": compute, "write": write, "rows": float(rows)}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    """Measure each N and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", required=True, help="a server's maintenance database URL")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated VPS counts")
    args = parser.parse_args()
    logs.configure(level="warning")  # the table is the output; log lines would interleave with it
    print(
        f"{'VPS':>7} {'snapshot rows':>13} {'floor s':>8} {'bare s':>7} {'compute s':>9} {'x floor':>7}"
        f" {'x bare':>6} {'write s':>8}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        r = await measure(args.database_url, n)
        ratio, strict = r["compute"] / r["floor"], r["compute"] / r["bare"]
        print(
            f"{n:>7} {int(r['rows']):>13} {r['floor']:>8.3f} {r['bare']:>7.3f} {r['compute']:>9.3f}"
            f" {ratio:>7.2f} {strict:>6.2f} {r['write']:>8.3f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
