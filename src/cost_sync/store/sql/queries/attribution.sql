-- The queries of tenant attribution (cost_sync.store.attribution), loaded by name (`-- name: NAME`
-- starts a query): the reads of one consistent picture of the fleet, and the snapshot's write.

-- name: columns
-- Which of these tables ($1) exist in the current schema, with their columns.
SELECT table_name, column_name
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ANY($1::text[]);

-- name: no_jit
-- The reads are large, simple scans and joins: compiling them (JIT) takes longer than it saves.
SET LOCAL jit = off;

-- name: read_vps
-- The latest price cost-sync wrote for each row: a stored value that differs (or no history at
-- all) makes the row unpriced. A run changes a row at most once, so `created` orders them. The
-- row's state says whether the last run that decided it could not price it (its value is kept).
SELECT v.id::text AS id, v.hostwinds_instance_id, v.status, v.approximate_cost,
       (SELECT h.new_cost FROM cost_sync_history h
        WHERE h.vps_instance_id = v.id ORDER BY h.created DESC LIMIT 1) AS last_written,
       s.unpriced_reason
FROM vps_instances v
LEFT JOIN cost_sync_row_state s ON s.vps_instance_id = v.id
WHERE v.status = ANY($1::text[]);

-- name: read_ips
-- The SMTP IPs of the VPS in scope. `{cost}` is filled in before it is sent: the IP's own
-- approximate_cost column where the platform has one, else NULL::numeric.
SELECT s.id::text AS id, s.vps_instance_id::text AS vps_instance_id, s.status, {cost} AS approximate_cost
FROM smtp_ip_addresses s JOIN vps_instances v ON v.id = s.vps_instance_id
WHERE v.status = ANY($1::text[]);

-- name: read_assignments
-- Every counted assignment, in scope or not: joining the IPs and their VPS to keep only those in
-- scope costs PostgreSQL more than reading the rest costs cost-sync, which looks up the takers of
-- the IPs in scope only. A tenant with many domains on one IP is one taker (_tenants_by_ip).
SELECT a.smtp_ip_address_id::text AS ip_id, d.tenant_id::text AS tenant_id
FROM domain_ip_assignments a
JOIN domains d ON d.id = a.domain_id
WHERE a.status = ANY($1::text[]) AND d.tenant_id IS NOT NULL;

-- name: read_tenant_names
SELECT id::text AS id, name FROM tenants WHERE id::text = ANY($1::text[]);

-- name: now
-- The database's clock at the start of the transaction.
SELECT now();

-- name: snapshot_lock
-- Serialises snapshot writers until the transaction ends ($1: the advisory lock key).
SELECT pg_advisory_xact_lock($1);

-- name: newer_exists
-- Whether a snapshot computed after $1 is stored already.
SELECT EXISTS (SELECT 1 FROM cost_sync_tenant_costs WHERE computed_at > $1);

-- name: clear_snapshot
DELETE FROM cost_sync_tenant_costs;

-- name: insert_snapshot
INSERT INTO cost_sync_tenant_costs (snapshot_id, run_id, computed_at, bucket, tenant_ref, tenant_name,
                                    vps_instance_id, hostwinds_instance_id, vps_cost, ip_cost,
                                    ip_count, unpriced)
SELECT $1, $2, $3, l.bucket, l.tenant_ref, l.tenant_name, l.vps_instance_id, l.hostwinds_instance_id,
       l.vps_cost, l.ip_cost, l.ip_count, l.unpriced
FROM unnest($4::text[], $5::uuid[], $6::text[], $7::uuid[], $8::text[], $9::numeric[], $10::numeric[],
            $11::int[], $12::bool[])
     AS l(bucket, tenant_ref, tenant_name, vps_instance_id, hostwinds_instance_id, vps_cost, ip_cost,
          ip_count, unpriced);

-- name: replace_day
-- The day's rows are the snapshot just written, summed per tenant by the view the dashboards read
-- (one definition of the sums): first the day's old rows go.
DELETE FROM cost_sync_tenant_daily WHERE day = ($1::timestamptz AT TIME ZONE 'UTC')::date;

-- name: insert_day
INSERT INTO cost_sync_tenant_daily (day, snapshot_id, computed_at, bucket, tenant_ref, tenant_name,
                                    vps_cost, ip_cost, total, vps_count, ip_count, unpriced_vps)
SELECT (m.computed_at AT TIME ZONE 'UTC')::date, m.snapshot_id, m.computed_at, m.bucket, m.tenant_ref,
       m.tenant_name, m.vps_cost, m.ip_cost, m.total, m.vps_count, m.ip_count, m.unpriced_vps
FROM cost_sync_tenant_monthly m;

-- name: forget_days
-- Days older than $2 days before $1 are forgotten.
DELETE FROM cost_sync_tenant_daily
WHERE day < ($1::timestamptz AT TIME ZONE 'UTC')::date - $2::int;
