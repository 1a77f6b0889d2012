-- 0008: the price lists the runs read, cached beside the per-service observations.
--
-- One row per (managed, drive_type, plan_key) a run asked get_price_list with: each plan's id,
-- rid, name and per-cycle price text, keyed by the field an instance's product_id joins to
-- ([hostwinds] plan_key), when it was read and by which run. Written as the answer arrives,
-- committed apart from the run's write transaction (as 0003's observations are). It lets
-- `cost-sync explain` say what a run would compute now for a row priced from the price list,
-- without asking Hostwinds. It holds answers, never a secret: a cell that is not a number is stored
-- as a fixed marker.
--
-- A shared table (no tenant_id), owned by cost-sync; no foreign key to the runs.

CREATE TABLE IF NOT EXISTS cost_sync_price_lists (
    managed BOOLEAN NOT NULL,
    drive_type TEXT NOT NULL,
    plan_key TEXT NOT NULL,
    plans JSONB NOT NULL
        CONSTRAINT chk_cost_sync_price_lists_plans CHECK (jsonb_typeof(plans) = 'object'),
    observed TIMESTAMP WITH TIME ZONE NOT NULL,
    run_id UUID NOT NULL,
    CONSTRAINT pk_cost_sync_price_lists PRIMARY KEY (managed, drive_type, plan_key)
);

COMMENT ON TABLE cost_sync_price_lists IS
'The last get_price_list answer per (managed, drive_type, plan_key): plans keyed by their join key, when, and by which run.';
COMMENT ON COLUMN cost_sync_price_lists.drive_type IS
'The drive_type the list was asked with; empty text when it was asked without one.';
