-- Rollback of 0006: drops the history's cycle_alias column (the aliases themselves are settings).
ALTER TABLE cost_sync_history DROP COLUMN IF EXISTS cycle_alias;
