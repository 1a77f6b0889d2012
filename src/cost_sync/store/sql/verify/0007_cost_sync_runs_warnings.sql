-- Verification of 0007: one row per check, (check, ok, found). Read-only.
SELECT 'column cost_sync_runs.warnings is text[]' AS check,
       coalesce(bool_or(c.data_type = 'ARRAY' AND c.udt_name = '_text'), false) AS ok,
       coalesce(max(c.udt_name), 'no column') AS found
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'cost_sync_runs'
  AND c.column_name = 'warnings'
UNION ALL
SELECT 'column cost_sync_runs.plan_names is jsonb',
       coalesce(bool_or(c.data_type = 'jsonb'), false),
       coalesce(max(c.data_type), 'no column')
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'cost_sync_runs'
  AND c.column_name = 'plan_names';
