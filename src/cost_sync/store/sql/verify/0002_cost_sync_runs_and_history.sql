-- Verification of 0002: one row per check, (check, ok, found). Read-only.
SELECT 'table cost_sync_runs exists' AS check,
       to_regclass('cost_sync_runs') IS NOT NULL AS ok,
       coalesce(to_regclass('cost_sync_runs')::text, 'no table') AS found
UNION ALL
SELECT 'table cost_sync_history exists',
       to_regclass('cost_sync_history') IS NOT NULL,
       coalesce(to_regclass('cost_sync_history')::text, 'no table');
