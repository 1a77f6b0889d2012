-- Rollback of 0007: drops the ledger's warnings and plan_names columns (the runs themselves stay).
ALTER TABLE cost_sync_runs DROP COLUMN IF EXISTS warnings;
ALTER TABLE cost_sync_runs DROP COLUMN IF EXISTS plan_names;
