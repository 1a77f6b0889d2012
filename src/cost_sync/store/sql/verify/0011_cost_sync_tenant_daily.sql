-- Verification of 0011: one row per check, (check, ok, found). Read-only.
SELECT 'table cost_sync_tenant_daily exists' AS check,
       to_regclass('cost_sync_tenant_daily') IS NOT NULL AS ok,
       coalesce(to_regclass('cost_sync_tenant_daily')::text, 'no table') AS found
UNION ALL
SELECT 'column cost_sync_tenant_daily.day is a date',
       coalesce(bool_or(c.data_type = 'date'), false),
       coalesce(max(c.data_type), 'no column')
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'cost_sync_tenant_daily'
  AND c.column_name = 'day';
