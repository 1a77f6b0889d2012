-- 0002: cost-sync's own run ledger and per-row price history.
--
-- Both are shared tables (no tenant_id) owned by cost-sync. No foreign key points at
-- vps_instances: cost-sync must never stop the platform from deleting one of its rows. History
-- rows name their run without a foreign key too: they are written in the same transaction as the
-- run's ledger row, and checking 10,000 references one by one would double the cost of the write.

CREATE TABLE IF NOT EXISTS cost_sync_runs (
    id UUID CONSTRAINT pk_cost_sync_runs PRIMARY KEY,
    trigger TEXT NOT NULL,
    outcome TEXT NOT NULL
        CONSTRAINT chk_cost_sync_runs_outcome CHECK (outcome IN ('succeeded', 'failed')),
    started TIMESTAMP WITH TIME ZONE NOT NULL,
    finished TIMESTAMP WITH TIME ZONE NOT NULL,
    instances TEXT[],
    rows_in_scope INTEGER NOT NULL DEFAULT 0,
    matched INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    unpriced INTEGER NOT NULL DEFAULT 0,
    priced_by_source JSONB NOT NULL DEFAULT '{}',
    unpriced_by_reason JSONB NOT NULL DEFAULT '{}',
    hostwinds_calls JSONB NOT NULL DEFAULT '{}',
    error TEXT,
    created TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

COMMENT ON TABLE cost_sync_runs IS
'One row per cost-sync run (dry runs excluded): trigger, outcome and counts. A failed run changed no data.';

CREATE INDEX IF NOT EXISTS idx_cost_sync_runs_started ON cost_sync_runs (started DESC);
CREATE INDEX IF NOT EXISTS idx_cost_sync_runs_started_succeeded
    ON cost_sync_runs (started DESC) WHERE outcome = 'succeeded';

CREATE TABLE IF NOT EXISTS cost_sync_history (
    run_id UUID NOT NULL,
    vps_instance_id UUID NOT NULL,
    hostwinds_instance_id VARCHAR(255),
    old_cost DECIMAL(8,2),
    new_cost DECIMAL(8,2) NOT NULL,
    source TEXT NOT NULL
        CONSTRAINT chk_cost_sync_history_source CHECK (source IN ('override', 'cycle_prices', 'price_list')),
    cycle TEXT,
    cycle_price NUMERIC,
    months INTEGER,
    hourly_ceiling BOOLEAN NOT NULL DEFAULT false,
    product_id INTEGER,
    product_name TEXT,
    created TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    -- A run changes an instance at most once: (run, instance) is the key, and serves "what did
    -- this run change" without an index of its own.
    CONSTRAINT pk_cost_sync_history PRIMARY KEY (run_id, vps_instance_id)
);

COMMENT ON TABLE cost_sync_history IS
'One row per change cost-sync made to vps_instances.approximate_cost: old and new value and where the price came from.';

CREATE INDEX IF NOT EXISTS idx_cost_sync_history_vps_instance_id
    ON cost_sync_history (vps_instance_id, created DESC);
