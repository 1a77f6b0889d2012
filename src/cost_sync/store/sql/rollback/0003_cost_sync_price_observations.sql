-- Rollback of 0003: drops the price observation cache (the next run asks every service again)
-- and the runs' price_cache column. vps_instances is not touched.
DROP TABLE IF EXISTS cost_sync_price_observations;
ALTER TABLE cost_sync_runs DROP COLUMN IF EXISTS price_cache;
