-- Verification of 0004: one row per check, (check, ok, found). Read-only.
SELECT 'table cost_sync_tenant_costs exists' AS check,
       to_regclass('cost_sync_tenant_costs') IS NOT NULL AS ok,
       coalesce(to_regclass('cost_sync_tenant_costs')::text, 'no table') AS found
UNION ALL
SELECT 'view cost_sync_tenant_monthly exists',
       to_regclass('cost_sync_tenant_monthly') IS NOT NULL,
       coalesce(to_regclass('cost_sync_tenant_monthly')::text, 'no view')
UNION ALL
-- NileDB would make a table with a tenant_id column a tenant table: cost-sync's must stay shared.
SELECT 'no cost_sync_* table or view has a column named tenant_id',
       count(*) = 0,
       coalesce(string_agg(c.table_name, ', '), 'none')
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name LIKE 'cost\_sync\_%' AND c.column_name = 'tenant_id';
