-- 0005: guarded changes. Held changes, what each row was last seen as, and what runs relied on.
--
-- cost_sync_held_changes: one row per vps_instances row whose proposed change exceeded
-- [guard] max_change_ratio; the old value stays in vps_instances until `cost-sync approve` (or a
-- run with --accept-changes) applies it. The basis columns repeat cost_sync_history's, so an
-- approved change is recorded with the derivation that proposed it.
--
-- cost_sync_row_state: per vps_instances row, what the last run that decided it saw: whether it
-- matched a Hostwinds instance (and which), the plan, why it was unpriced, and whether Hostwinds
-- offers an upgrade. Runs write only the rows whose state changed, so a steady fleet writes none.
-- `cost-sync report`, `explain` and the max_unmatched_ratio guard read it.
--
-- All shared tables (no tenant_id), owned by cost-sync; no foreign key to vps_instances (cost-sync
-- must never stop the platform from deleting a row) nor to the run ledger.

CREATE TABLE IF NOT EXISTS cost_sync_held_changes (
    vps_instance_id UUID CONSTRAINT pk_cost_sync_held_changes PRIMARY KEY,
    hostwinds_instance_id VARCHAR(255),
    old_cost DECIMAL(8,2),
    proposed_cost DECIMAL(8,2) NOT NULL,
    ratio NUMERIC NOT NULL,
    reason TEXT NOT NULL,
    run_id UUID NOT NULL,
    since TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    source TEXT NOT NULL,
    cycle TEXT,
    cycle_price NUMERIC,
    months INTEGER,
    hourly_ceiling BOOLEAN NOT NULL DEFAULT false,
    product_id INTEGER,
    product_name TEXT,
    cycle_alias TEXT
);

COMMENT ON TABLE cost_sync_held_changes IS
'Changes to vps_instances.approximate_cost that cost-sync held for a person (cost-sync held / approve): old, proposed, ratio, reason, proposing run.';

CREATE TABLE IF NOT EXISTS cost_sync_row_state (
    vps_instance_id UUID CONSTRAINT pk_cost_sync_row_state PRIMARY KEY,
    matched BOOLEAN NOT NULL,
    serviceid BIGINT,
    server_uuid TEXT,
    product_id INTEGER,
    unpriced_reason TEXT,
    unpriced_detail TEXT,
    upgrade_available BOOLEAN NOT NULL DEFAULT false,
    run_id UUID NOT NULL,
    updated TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

COMMENT ON TABLE cost_sync_row_state IS
'Per vps_instances row: what the last run that decided it saw (matched instance, plan, unpriced reason, upgrade_available).';

-- The plans a successful run relied on, so the next one can tell a price list that lost them.
ALTER TABLE cost_sync_runs ADD COLUMN IF NOT EXISTS plans_in_use INTEGER[];
ALTER TABLE cost_sync_runs ADD COLUMN IF NOT EXISTS held INTEGER NOT NULL DEFAULT 0;

-- An approved held change is recorded in history as approved, naming the run that proposed it.
ALTER TABLE cost_sync_history ADD COLUMN IF NOT EXISTS approved BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE cost_sync_history ADD COLUMN IF NOT EXISTS proposed_by UUID;
