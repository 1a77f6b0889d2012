-- Verification of 0008: one row per check, (check, ok, found). Read-only.
SELECT 'table cost_sync_price_lists exists' AS check,
       to_regclass('cost_sync_price_lists') IS NOT NULL AS ok,
       coalesce(to_regclass('cost_sync_price_lists')::text, 'no table') AS found;
