-- 0009: why a value came from the price list, and whether it is a provisional estimate.
--
-- A service's own cycle prices are the most specific price. When they are {} (no data), an error
-- envelope or unreadable, the row is priced from the price list's plan and cycle instead; the
-- history row says why in `fallback` ('cycle_prices_empty', 'cycle_prices_error',
-- 'cycle_prices_unreadable', 'cycle_missing'), NULL when no fallback happened (every row before
-- this migration). `provisional` marks a price-list estimate given to a row with no value while
-- its per-service prices are still to be asked (a cold start); a later run refines it.

ALTER TABLE cost_sync_history ADD COLUMN IF NOT EXISTS fallback TEXT;
ALTER TABLE cost_sync_history ADD COLUMN IF NOT EXISTS provisional BOOLEAN NOT NULL DEFAULT false;

COMMENT ON COLUMN cost_sync_history.fallback IS
'Why a price_list value did not come from the service''s own cycle prices; NULL when it did not fall back.';
COMMENT ON COLUMN cost_sync_history.provisional IS
'true: a price-list estimate given while the service''s own cycle prices were still to be asked.';
