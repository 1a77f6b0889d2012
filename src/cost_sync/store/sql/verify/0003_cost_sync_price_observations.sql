-- Verification of 0003: one row per check, (check, ok, found). Read-only.
SELECT 'table cost_sync_price_observations exists' AS check,
       to_regclass('cost_sync_price_observations') IS NOT NULL AS ok,
       coalesce(to_regclass('cost_sync_price_observations')::text, 'no table') AS found
UNION ALL
SELECT 'column cost_sync_runs.price_cache exists',
       count(*) = 1,
       count(*)::text || ' column(s)'
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'cost_sync_runs' AND column_name = 'price_cache';
