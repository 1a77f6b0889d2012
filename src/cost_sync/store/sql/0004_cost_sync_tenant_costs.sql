-- 0004: cost_sync_tenant_costs, the latest tenant attribution, and cost_sync_tenant_monthly for dashboards.
--
-- A shared table owned by cost-sync: it names tenants in tenant_ref, never in a column called
-- tenant_id, because NileDB treats a table with a tenant_id column as a tenant table, and one
-- transaction may not write tenant and shared tables; cost-sync's tables are all shared. No
-- foreign key points at vps_instances or tenants: cost-sync never stops the platform from deleting
-- a row, and NileDB allows no foreign key between shared and tenant tables.
--
-- cost-sync replaces the table's content as a whole, in one transaction, after each successful sync
-- (with [attribution] enabled) and on `cost-sync attribution --write`. Each VPS in scope has one
-- row per tenant that takes a share of it and, when something of it is unallocated (or no tenant
-- takes any of it), one 'unallocated' row: per VPS, the rows' vps_cost add up to its
-- approximate_cost exactly, to the cent.

CREATE TABLE IF NOT EXISTS cost_sync_tenant_costs (
    snapshot_id UUID NOT NULL,
    run_id UUID,
    computed_at TIMESTAMP WITH TIME ZONE NOT NULL,
    bucket TEXT NOT NULL
        CONSTRAINT chk_cost_sync_tenant_costs_bucket CHECK (bucket IN ('tenant', 'unallocated')),
    tenant_ref UUID,
    tenant_name TEXT,
    vps_instance_id UUID NOT NULL,
    hostwinds_instance_id VARCHAR(255),
    vps_cost DECIMAL(12,2),
    ip_cost DECIMAL(12,2) NOT NULL DEFAULT 0.00,
    ip_count INTEGER NOT NULL DEFAULT 0,
    unpriced BOOLEAN NOT NULL DEFAULT false,
    created TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT chk_cost_sync_tenant_costs_tenant_ref
        CHECK ((bucket = 'tenant') = (tenant_ref IS NOT NULL)),
    CONSTRAINT uq_cost_sync_tenant_costs_line
        UNIQUE NULLS NOT DISTINCT (snapshot_id, vps_instance_id, tenant_ref)
);

COMMENT ON TABLE cost_sync_tenant_costs IS
'Latest tenant attribution of vps_instances.approximate_cost (and per-IP costs), written by cost-sync: one row per (VPS, tenant) plus unallocated capacity. Shared table: tenants are named in tenant_ref.';
COMMENT ON COLUMN cost_sync_tenant_costs.tenant_ref IS
'domains.tenant_id of the tenant this share is charged to; NULL for the unallocated bucket. Not named tenant_id: this is a shared table.';
COMMENT ON COLUMN cost_sync_tenant_costs.vps_cost IS
'This tenant''s share of the VPS''s approximate_cost in USD; NULL when the VPS has no value (unknown, never zero).';
COMMENT ON COLUMN cost_sync_tenant_costs.unpriced IS
'True when the VPS''s approximate_cost is not a current price cost-sync wrote (NULL, never priced, changed by someone else, or the last run could not price it): counted with its kept value.';

CREATE INDEX IF NOT EXISTS idx_cost_sync_tenant_costs_tenant_ref
    ON cost_sync_tenant_costs (snapshot_id, tenant_ref);

-- The latest snapshot summed per tenant, plus one row (bucket 'unallocated', tenant_ref NULL) for
-- idle capacity. cost-sync keeps one snapshot at a time; choosing the latest still makes the view
-- right while a replacement is in flight elsewhere or if rows are ever appended by hand.
CREATE OR REPLACE VIEW cost_sync_tenant_monthly AS
SELECT c.snapshot_id,
       max(c.computed_at) AS computed_at,
       c.bucket,
       c.tenant_ref,
       max(c.tenant_name) AS tenant_name,
       sum(c.vps_cost) AS vps_cost,
       sum(c.ip_cost) AS ip_cost,
       coalesce(sum(c.vps_cost), 0) + sum(c.ip_cost) AS total,
       count(DISTINCT c.vps_instance_id) AS vps_count,
       sum(c.ip_count) AS ip_count,
       count(DISTINCT c.vps_instance_id) FILTER (WHERE c.unpriced) AS unpriced_vps
FROM cost_sync_tenant_costs c
WHERE c.snapshot_id = (
    SELECT l.snapshot_id FROM cost_sync_tenant_costs l ORDER BY l.computed_at DESC, l.snapshot_id LIMIT 1
)
GROUP BY c.snapshot_id, c.bucket, c.tenant_ref;

COMMENT ON VIEW cost_sync_tenant_monthly IS
'Monthly USD per tenant from cost-sync''s latest attribution snapshot; bucket ''unallocated'' is idle capacity. Read this, not vps_instances joined to tenants.';
