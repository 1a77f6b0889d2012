-- Rollback of 0009: drops the history's fallback and provisional columns.
ALTER TABLE cost_sync_history DROP COLUMN IF EXISTS provisional;
ALTER TABLE cost_sync_history DROP COLUMN IF EXISTS fallback;
