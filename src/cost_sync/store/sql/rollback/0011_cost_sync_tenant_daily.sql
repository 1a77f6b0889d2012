-- Rollback of 0011: drops cost_sync_tenant_daily, the per-day tenant attribution (a derived copy:
-- the days it held are lost; the latest snapshot in cost_sync_tenant_costs stays).
-- Run with `cost-sync migrate --rollback 0011`.
DROP TABLE IF EXISTS cost_sync_tenant_daily;
