-- Verification of 0005: one row per check, (check, ok, found). Read-only.
SELECT 'table cost_sync_held_changes exists' AS check,
       to_regclass('cost_sync_held_changes') IS NOT NULL AS ok,
       coalesce(to_regclass('cost_sync_held_changes')::text, 'no table') AS found
UNION ALL
SELECT 'table cost_sync_row_state exists',
       to_regclass('cost_sync_row_state') IS NOT NULL,
       coalesce(to_regclass('cost_sync_row_state')::text, 'no table')
UNION ALL
SELECT 'columns cost_sync_runs.plans_in_use, held exist',
       count(*) = 2,
       count(*)::text || ' column(s)'
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'cost_sync_runs'
  AND column_name IN ('plans_in_use', 'held')
UNION ALL
SELECT 'columns cost_sync_history.approved, proposed_by exist',
       count(*) = 2,
       count(*)::text || ' column(s)'
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'cost_sync_history'
  AND column_name IN ('approved', 'proposed_by');
