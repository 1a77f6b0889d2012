-- Rollback of 0004: drops the dashboard view and cost-sync's tenant attribution snapshot (a derived
-- copy: the next `cost-sync attribution --write` recomputes it). Platform tables are not touched.
-- Run with `cost-sync migrate --rollback 0004`.
DROP VIEW IF EXISTS cost_sync_tenant_monthly;
DROP TABLE IF EXISTS cost_sync_tenant_costs;
