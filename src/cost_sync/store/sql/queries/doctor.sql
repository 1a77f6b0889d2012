-- The queries of `cost-sync doctor` (cost_sync.cli.doctor), loaded by name (`-- name: NAME` starts
-- a query). None of them writes: doctor reads what a first run rests on.

-- name: server_version
SHOW server_version;

-- name: vps_columns
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'vps_instances';

-- name: row_count
SELECT count(*) FROM vps_instances;

-- name: in_recovery
-- True on a hot standby (a read-only replica).
SELECT pg_is_in_recovery();

-- name: read_only_sessions
SHOW default_transaction_read_only;

-- name: table_exists
-- Whether table $1 is visible (NULL: it is not).
SELECT to_regclass($1);

-- name: has_privilege
-- Whether this user holds privilege $2 on table $1.
SELECT has_table_privilege($1, $2);
