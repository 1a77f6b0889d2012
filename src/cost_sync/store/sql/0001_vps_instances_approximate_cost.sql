-- 0001: vps_instances.approximate_cost, the column cost-sync keeps true.
--
-- The PenguinMails seed step "VPS Instances Cost Tracking" (step 1 of 5), made re-runnable in plain
-- SQL (NileDB allows no DO blocks or functions) and made to bring both starting states to one end
-- state: a vps_instances without the column, and the documented table that already has
-- approximate_cost DECIMAL(8,2) with no default and no CHECK.
--
-- Internal-only reference for Hostwinds VPS costs; final truth for spend remains Hostwinds invoices
-- and Finance systems.

ALTER TABLE vps_instances
    ADD COLUMN IF NOT EXISTS approximate_cost DECIMAL(8,2) DEFAULT 0.00;

-- ADD COLUMN IF NOT EXISTS leaves an existing column's default alone: set it explicitly.
ALTER TABLE vps_instances
    ALTER COLUMN approximate_cost SET DEFAULT 0.00;

COMMENT ON COLUMN vps_instances.approximate_cost IS
'Estimated monthly cost in USD for this Hostwinds VPS instance, derived from Hostwinds pricing APIs
(get_price_list, get_billingcycle_prices, upgrade_instance) using the active plan/specs and billing cycle.
Primary intent: track Hostwinds-related infrastructure spend per instance for internal ROI/margin analysis.
Not authoritative customer billing; final invoices remain in Finance systems.';

-- Refuse, naming the rows, when existing values would violate the CHECK below. Plain SQL has no
-- RAISE: casting the message to integer fails with the message as the offending input, and the
-- whole migration (its own transaction) rolls back, so no data changes.
SELECT ('cost-sync: negative approximate_cost in vps_instances rows: '
        || string_agg(id::text || ' (' || approximate_cost::text || ')', ', ' ORDER BY id))::integer
FROM vps_instances
WHERE approximate_cost < 0
HAVING count(*) > 0;

-- PostgreSQL has no ADD CONSTRAINT IF NOT EXISTS: drop and re-add, atomically in this transaction.
ALTER TABLE vps_instances
    DROP CONSTRAINT IF EXISTS chk_vps_approximate_cost_positive;
ALTER TABLE vps_instances
    ADD CONSTRAINT chk_vps_approximate_cost_positive CHECK (approximate_cost >= 0);

CREATE INDEX IF NOT EXISTS idx_vps_instances_approximate_cost
    ON vps_instances (approximate_cost)
    WHERE status = 'active';
