-- cost-sync's migration ledger: which files of sql/ are applied, with the checksum they had.
-- Applied before every migration run; re-runnable.
CREATE TABLE IF NOT EXISTS cost_sync_migrations (
    name TEXT CONSTRAINT pk_cost_sync_migrations PRIMARY KEY,
    checksum TEXT NOT NULL,
    applied TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
