-- 0011: cost_sync_tenant_daily, one attribution per tenant per day, for the cost over time.
--
-- cost_sync_tenant_costs holds only the latest snapshot (the view cost_sync_tenant_monthly reads
-- it). Each time cost-sync writes a snapshot it also replaces that UTC day's rows here with the
-- snapshot summed per tenant (the same sums as the view), and deletes days older than
-- `[attribution] keep_days` (default 400): the last snapshot of a day stands for the day.
-- A shared table: tenants are named in tenant_ref, never in a column called tenant_id (see 0004).

CREATE TABLE IF NOT EXISTS cost_sync_tenant_daily (
    day DATE NOT NULL,
    snapshot_id UUID NOT NULL,
    computed_at TIMESTAMP WITH TIME ZONE NOT NULL,
    bucket TEXT NOT NULL
        CONSTRAINT chk_cost_sync_tenant_daily_bucket CHECK (bucket IN ('tenant', 'unallocated')),
    tenant_ref UUID,
    tenant_name TEXT,
    vps_cost DECIMAL(12,2),
    ip_cost DECIMAL(12,2) NOT NULL DEFAULT 0.00,
    total DECIMAL(12,2) NOT NULL,
    vps_count INTEGER NOT NULL DEFAULT 0,
    ip_count INTEGER NOT NULL DEFAULT 0,
    unpriced_vps INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT chk_cost_sync_tenant_daily_tenant_ref
        CHECK ((bucket = 'tenant') = (tenant_ref IS NOT NULL)),
    CONSTRAINT uq_cost_sync_tenant_daily_line UNIQUE NULLS NOT DISTINCT (day, tenant_ref)
);

COMMENT ON TABLE cost_sync_tenant_daily IS
'Tenant attribution per UTC day (the day''s last snapshot, summed per tenant as cost_sync_tenant_monthly sums it), kept [attribution] keep_days days. Shared table: tenants are named in tenant_ref.';
COMMENT ON COLUMN cost_sync_tenant_daily.tenant_ref IS
'domains.tenant_id of the tenant; NULL for the unallocated (idle) bucket. Not named tenant_id: this is a shared table.';
COMMENT ON COLUMN cost_sync_tenant_daily.vps_cost IS
'The tenant''s share of its VPS costs in USD; NULL when none of those VPS had a value (unknown, never zero).';
