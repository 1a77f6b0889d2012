-- Rollback of 0008: drops the price-list cache (the next run reads the lists again).
DROP TABLE IF EXISTS cost_sync_price_lists;
