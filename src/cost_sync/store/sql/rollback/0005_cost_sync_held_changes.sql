-- Rollback of 0005: drops the held changes (their rows keep their old value) and the row state
-- (the next run writes it again), and the columns 0005 added. vps_instances is not touched.
DROP TABLE IF EXISTS cost_sync_held_changes;
DROP TABLE IF EXISTS cost_sync_row_state;
ALTER TABLE cost_sync_runs DROP COLUMN IF EXISTS plans_in_use;
ALTER TABLE cost_sync_runs DROP COLUMN IF EXISTS held;
ALTER TABLE cost_sync_history DROP COLUMN IF EXISTS approved;
ALTER TABLE cost_sync_history DROP COLUMN IF EXISTS proposed_by;
