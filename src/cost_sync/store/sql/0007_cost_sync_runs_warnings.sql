-- 0007: what a run flagged, kept in the run ledger.
--
-- A run that looks wrong (prices x10 or halved, an empty instance list, most plans missing, a
-- service listed twice, rows sharing one VPS, overrides naming no row) still runs and says so in
-- its report and log. The ledger now keeps those lines too, and how the price-list names compared
-- with the instances' product_name, so a question asked weeks later finds them in the database.
-- Rows before this migration have no warnings and no plan_names (NULL: not recorded).

ALTER TABLE cost_sync_runs ADD COLUMN IF NOT EXISTS warnings TEXT[];
ALTER TABLE cost_sync_runs ADD COLUMN IF NOT EXISTS plan_names JSONB;

COMMENT ON COLUMN cost_sync_runs.warnings IS
'What the run flagged for a person to look at (RunReport.warnings, one line each); empty when nothing; NULL before migration 0007.';
COMMENT ON COLUMN cost_sync_runs.plan_names IS
'{"agree": n, "disagree": n}: instances whose joined price-list row name agrees with their product_name, or not; NULL before migration 0007.';
