-- 0003: the price observation cache, and what the cache did in each run.
--
-- One row per Hostwinds serviceid: what get_billingcycle_prices answered (each cycle's exact price
-- text; an empty object when Hostwinds had no data for the service), the instance's fingerprint
-- when it was asked, when, and by which run. Rows are written as answers arrive, committed apart
-- from the run's write transaction, so a failed or cancelled run keeps every answer it received
-- while it writes nothing to vps_instances. It holds answers, never a secret: a cell that is not
-- a number is stored as a fixed marker, not as the text Hostwinds sent.
--
-- A shared table (no tenant_id), owned by cost-sync; no foreign key to vps_instances or the runs.

CREATE TABLE IF NOT EXISTS cost_sync_price_observations (
    serviceid BIGINT CONSTRAINT pk_cost_sync_price_observations PRIMARY KEY,
    prices JSONB NOT NULL
        CONSTRAINT chk_cost_sync_price_observations_prices CHECK (jsonb_typeof(prices) = 'object'),
    fingerprint TEXT NOT NULL,
    observed TIMESTAMP WITH TIME ZONE NOT NULL,
    run_id UUID NOT NULL
);

COMMENT ON TABLE cost_sync_price_observations IS
'Per Hostwinds serviceid: the cycle prices get_billingcycle_prices last answered, the instance fingerprint then, when, and by which run.';

CREATE INDEX IF NOT EXISTS idx_cost_sync_price_observations_observed
    ON cost_sync_price_observations (observed);

ALTER TABLE cost_sync_runs ADD COLUMN IF NOT EXISTS price_cache JSONB NOT NULL DEFAULT '{}';
