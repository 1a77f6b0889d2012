-- The queries of `cost-sync migrate` (cost_sync.store.migrate), loaded by name (`-- name: NAME`
-- starts a query). The migrations themselves are the NNNN_*.sql files, run as they are.

-- name: ledger_exists
SELECT to_regclass('cost_sync_migrations');

-- name: applied
SELECT name, checksum FROM cost_sync_migrations;

-- name: applied_checksum
-- The checksum $1 was applied with (no row: not applied).
SELECT checksum FROM cost_sync_migrations WHERE name = $1;

-- name: record_applied
INSERT INTO cost_sync_migrations (name, checksum) VALUES ($1, $2);

-- name: forget_applied
DELETE FROM cost_sync_migrations WHERE name = $1;

-- name: try_lock
-- The migration lock ($1: its advisory key), held until the transaction ends; false: another has it.
SELECT pg_try_advisory_xact_lock($1);

-- name: platform_table_exists
SELECT to_regclass('vps_instances') IS NOT NULL;

-- name: table_exists
-- Whether table $1 is visible (NULL: it is not).
SELECT to_regclass($1);

-- name: column_exists
SELECT EXISTS (
    SELECT 1 FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2
);
