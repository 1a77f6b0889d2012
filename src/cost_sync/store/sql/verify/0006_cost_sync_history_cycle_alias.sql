-- Verification of 0006: one row per check, (check, ok, found). Read-only.
SELECT 'column cost_sync_history.cycle_alias is text' AS check,
       coalesce(bool_or(c.data_type = 'text'), false) AS ok,
       coalesce(max(c.data_type), 'no column') AS found
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'cost_sync_history'
  AND c.column_name = 'cycle_alias';
