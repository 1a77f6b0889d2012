-- 0006: the cycle alias an estimate was priced through, in the price history.
--
-- When an account spells a cycle in a way that names none ("Bi-Annually"), a
-- [hostwinds.cycle_aliases] entry maps it to a cycle. The history row of a value priced that way
-- records the account's spelling, so "why did this cost change" shows the alias that decided the
-- number of months. NULL: the spelling named its cycle itself (every row before this migration).

ALTER TABLE cost_sync_history ADD COLUMN IF NOT EXISTS cycle_alias TEXT;

COMMENT ON COLUMN cost_sync_history.cycle_alias IS
'The instance''s billingcycle spelling when a [hostwinds.cycle_aliases] entry chose the cycle; NULL otherwise.';
