-- 0010: run exclusivity by a lease row, and a ledger that shows when each run held it.
--
-- Runs used to be exclusive through a session-level advisory lock. Through a pooler in
-- transaction mode (PgBouncer, NileDB) a session belongs to whichever client the pooler hands it
-- to, so that lock protected nothing. The lease is one row, taken and renewed in short
-- transactions, dated by the database's clock: `holder_run` holds it until `expires_at` (renewed
-- by a heartbeat while the run runs); another process may take it once it has expired. `token`
-- grows by one at every take: the run's final write checks, under FOR UPDATE on this row, that the
-- token is still its own and unexpired (fencing), else writes nothing.
--
-- The ledger gains a run's row from the moment it starts (outcome 'running', finished NULL), the
-- time it took the lease (`lease_taken`, database clock) and who ran it (`holder`: host and pid).
-- A run whose lease expired while it was still 'running' (its process was killed) ends as
-- 'abandoned', set by the run that takes the lease over. Rows before this migration have no
-- lease_taken.

CREATE TABLE IF NOT EXISTS cost_sync_lease (
    id SMALLINT CONSTRAINT pk_cost_sync_lease PRIMARY KEY
        CONSTRAINT chk_cost_sync_lease_one_row CHECK (id = 1),
    holder_run UUID,
    holder TEXT,
    token BIGINT NOT NULL DEFAULT 0,
    taken_at TIMESTAMP WITH TIME ZONE,
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT '-infinity'
);

COMMENT ON TABLE cost_sync_lease IS
'One row: the run lease. The run holder_run holds it until expires_at (database clock); token grows at every take and fences a run that lost it.';

INSERT INTO cost_sync_lease (id) VALUES (1) ON CONFLICT (id) DO NOTHING;

ALTER TABLE cost_sync_runs ADD COLUMN IF NOT EXISTS lease_taken TIMESTAMP WITH TIME ZONE;
ALTER TABLE cost_sync_runs ADD COLUMN IF NOT EXISTS holder TEXT;
ALTER TABLE cost_sync_runs ALTER COLUMN finished DROP NOT NULL;
ALTER TABLE cost_sync_runs DROP CONSTRAINT IF EXISTS chk_cost_sync_runs_outcome;
ALTER TABLE cost_sync_runs ADD CONSTRAINT chk_cost_sync_runs_outcome
    CHECK (outcome IN ('succeeded', 'failed', 'running', 'abandoned'));

COMMENT ON COLUMN cost_sync_runs.lease_taken IS
'When the run took the run lease (database clock); NULL while it waits, when it never got it, and before migration 0010.';
COMMENT ON COLUMN cost_sync_runs.holder IS
'host:pid of the process that ran the run; NULL before migration 0010.';
