-- Rollback of 0002: drops cost-sync's own run ledger and price history (their data is lost).
-- vps_instances is not touched. Run with `cost-sync migrate --rollback 0002`.
DROP TABLE IF EXISTS cost_sync_history;
DROP TABLE IF EXISTS cost_sync_runs;
