-- Rollback of 0001: drops the index and the CHECK; keeps the column and its data.
--
-- Re-runnable. Values are kept: when the estimates must be withdrawn, setting them back to 0.00 is
-- preferred over dropping the column (other migration steps and views read it):
--   UPDATE vps_instances SET approximate_cost = 0.00;
-- Run with `cost-sync migrate --rollback 0001`, which also removes 0001 from cost-sync's ledger.

DROP INDEX IF EXISTS idx_vps_instances_approximate_cost;

ALTER TABLE vps_instances
    DROP CONSTRAINT IF EXISTS chk_vps_approximate_cost_positive;

-- Last resort only, after every reader of the column is gone (irreversible: the values are lost):
-- ALTER TABLE vps_instances DROP COLUMN IF EXISTS approximate_cost;
