-- Verification of 0010: one row per check, (check, ok, found). Read-only.
SELECT 'table cost_sync_lease exists' AS check,
       to_regclass('cost_sync_lease') IS NOT NULL AS ok,
       coalesce(to_regclass('cost_sync_lease')::text, 'no table') AS found
UNION ALL
SELECT 'column cost_sync_runs.lease_taken is timestamp with time zone',
       coalesce(bool_or(c.data_type = 'timestamp with time zone'), false),
       coalesce(max(c.data_type), 'no column')
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'cost_sync_runs'
  AND c.column_name = 'lease_taken'
UNION ALL
SELECT 'column cost_sync_runs.holder is text',
       coalesce(bool_or(c.data_type = 'text'), false),
       coalesce(max(c.data_type), 'no column')
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'cost_sync_runs'
  AND c.column_name = 'holder'
UNION ALL
SELECT 'cost_sync_runs.outcome allows running and abandoned',
       coalesce(bool_or(pg_get_constraintdef(k.oid) LIKE '%abandoned%'), false),
       coalesce(max(pg_get_constraintdef(k.oid)), 'no constraint')
FROM pg_constraint k
WHERE k.conname = 'chk_cost_sync_runs_outcome' AND k.conrelid = to_regclass('cost_sync_runs');
