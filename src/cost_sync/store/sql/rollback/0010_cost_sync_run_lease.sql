-- Rollback of 0010: drops the run lease and the ledger's lease_taken and holder columns. Runs still
-- 'running' or 'abandoned' become 'failed' (the outcomes 0002 knows), finished set to started.
DROP TABLE IF EXISTS cost_sync_lease;
UPDATE cost_sync_runs SET outcome = 'failed', finished = coalesce(finished, started),
    error = coalesce(error, outcome || ' when migration 0010 was rolled back')
WHERE outcome NOT IN ('succeeded', 'failed') OR finished IS NULL;
ALTER TABLE cost_sync_runs DROP CONSTRAINT IF EXISTS chk_cost_sync_runs_outcome;
ALTER TABLE cost_sync_runs ADD CONSTRAINT chk_cost_sync_runs_outcome CHECK (outcome IN ('succeeded', 'failed'));
ALTER TABLE cost_sync_runs ALTER COLUMN finished SET NOT NULL;
ALTER TABLE cost_sync_runs DROP COLUMN IF EXISTS holder;
ALTER TABLE cost_sync_runs DROP COLUMN IF EXISTS lease_taken;
